package guest

import _ "embed"

// Unit files that image builds install in a guest with systemd, with
// the agent at [AgentPath]. Both are wanted by sysinit.target.
var (
	// AgentUnit runs the agent (superjolt-agent.service).
	//go:embed units/superjolt-agent.service
	AgentUnit string
	// BootConfigUnit applies the boot configuration once per boot
	// (superjolt-bootconfig.service), before the network comes up.
	//go:embed units/superjolt-bootconfig.service
	BootConfigUnit string
)

// AgentPath is where a guest with systemd has the agent.
const AgentPath = "/usr/sbin/superjolt-agent"

// InitExecFile, in an initramfs whose /init is the agent, names the
// program [Init] execs on the root disk: its first line is the path,
// later non-empty lines are arguments ("/sbin/init" for an image with
// systemd). Without it, Init execs the agent (serve), as the built-in
// image wants.
const InitExecFile = "/superjolt-init"
