package vmm

// rdtsc reads the time stamp counter of the CPU it runs on (serialised by LFENCE).
func rdtsc() uint64

const haveRDTSC = true
