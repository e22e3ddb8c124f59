package guest

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestParseCmdline(t *testing.T) {
	net := func(addr, gw string, dns ...string) *BootNet {
		n := &BootNet{Addr: netip.MustParsePrefix(addr), Gateway: netip.MustParseAddr(gw)}
		for _, d := range dns {
			n.DNS = append(n.DNS, netip.MustParseAddr(d))
		}
		return n
	}
	tests := []struct {
		name    string
		cmdline string
		want    BootConfig
		wantErr string // a substring of the error; "" for success
	}{
		{name: "nothing", cmdline: "console=ttyS0 panic=-1 quiet pci=off\n"},
		{name: "hostname", cmdline: "console=ttyS0 superjolt.hostname=web-1 quiet", want: BootConfig{Hostname: "web-1"}},
		{name: "net with dns", cmdline: "quiet superjolt.net=10.77.0.2/16,10.77.0.1,10.77.0.1\n",
			want: BootConfig{Net: net("10.77.0.2/16", "10.77.0.1", "10.77.0.1")}},
		{name: "net without dns", cmdline: "superjolt.net=10.77.0.2/24,10.77.0.1",
			want: BootConfig{Net: net("10.77.0.2/24", "10.77.0.1")}},
		{name: "two name servers, one IPv6", cmdline: "superjolt.net=192.0.2.10/24,192.0.2.1,192.0.2.53,2001:db8::53",
			want: BootConfig{Net: net("192.0.2.10/24", "192.0.2.1", "192.0.2.53", "2001:db8::53")}},
		{name: "both, last of a key wins", cmdline: "superjolt.hostname=a superjolt.hostname=db superjolt.net=10.77.0.3/16,10.77.0.1",
			want: BootConfig{Hostname: "db", Net: net("10.77.0.3/16", "10.77.0.1")}},
		{name: "similar keys ignored", cmdline: "superjolt.hostnamex=BAD xsuperjolt.net=junk superjolt.other=1"},

		{name: "empty hostname", cmdline: "superjolt.hostname=", wantErr: `superjolt.hostname=""`},
		{name: "uppercase hostname", cmdline: "superjolt.hostname=Web", wantErr: `"Web"`},
		{name: "hostname with dot", cmdline: "superjolt.hostname=a.b", wantErr: `"a.b"`},
		{name: "hostname leading dash", cmdline: "superjolt.hostname=-a", wantErr: `"-a"`},
		{name: "hostname too long", cmdline: "superjolt.hostname=" + strings.Repeat("a", 64), wantErr: "1-63"},
		{name: "net without gateway", cmdline: "superjolt.net=10.77.0.2/16", wantErr: `"10.77.0.2/16"`},
		{name: "net address without prefix", cmdline: "superjolt.net=10.77.0.2,10.77.0.1", wantErr: `address "10.77.0.2"`},
		{name: "net bad gateway", cmdline: "superjolt.net=10.77.0.2/16,10.77.0.x", wantErr: `gateway "10.77.0.x"`},
		{name: "net bad dns", cmdline: "superjolt.net=10.77.0.2/16,10.77.0.1,dns.example", wantErr: `name server "dns.example"`},
		{name: "net empty dns", cmdline: "superjolt.net=10.77.0.2/16,10.77.0.1,", wantErr: `name server ""`},
		{name: "net IPv6 address", cmdline: "superjolt.net=2001:db8::2/64,2001:db8::1", wantErr: "IPv4"},
		{name: "net gateway outside", cmdline: "superjolt.net=10.77.0.2/16,10.78.0.1", wantErr: "10.78.0.1"},
		{name: "net gateway is the address", cmdline: "superjolt.net=10.77.0.2/16,10.77.0.2", wantErr: "another address"},
		{name: "net network address", cmdline: "superjolt.net=10.77.0.0/16,10.77.0.1", wantErr: "network or broadcast"},
		{name: "net broadcast address", cmdline: "superjolt.net=10.77.255.255/16,10.77.0.1", wantErr: "network or broadcast"},
		{name: "net /32", cmdline: "superjolt.net=10.77.0.2/32,10.77.0.1", wantErr: "prefix length"},
		{name: "net zoned dns", cmdline: "superjolt.net=10.77.0.2/16,10.77.0.1,fe80::1%eth0", wantErr: "fe80::1%eth0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCmdline(tt.cmdline)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseCmdline(%q) = %+v, %v; want an error naming %s", tt.cmdline, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseCmdline(%q): %v", tt.cmdline, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseCmdline(%q) = %+v (net %+v), want %+v (net %+v)", tt.cmdline, got, got.Net, tt.want, tt.want.Net)
			}
			// What the host writes reads back the same.
			words, err := got.CmdlineArgs()
			if err != nil {
				t.Fatalf("CmdlineArgs: %v", err)
			}
			back, err := ParseCmdline(words)
			if err != nil || !reflect.DeepEqual(back, got) {
				t.Errorf("round trip through %q = %+v, %v", words, back, err)
			}
		})
	}
}

func TestCmdlineArgs(t *testing.T) {
	c := BootConfig{Hostname: "web-1", Net: &BootNet{
		Addr: netip.MustParsePrefix("10.77.0.2/16"), Gateway: netip.MustParseAddr("10.77.0.1"),
		DNS: []netip.Addr{netip.MustParseAddr("10.77.0.1")},
	}}
	got, err := c.CmdlineArgs()
	if want := "superjolt.hostname=web-1 superjolt.net=10.77.0.2/16,10.77.0.1,10.77.0.1"; err != nil || got != want {
		t.Errorf("CmdlineArgs = %q, %v; want %q", got, err, want)
	}
	if got, err := (BootConfig{}).CmdlineArgs(); got != "" || err != nil {
		t.Errorf("empty CmdlineArgs = %q, %v", got, err)
	}
	for _, bad := range []BootConfig{
		{Hostname: "web 1"},
		{Hostname: "x superjolt.net=1.2.3.4/8,1.2.3.5"},
		{Net: &BootNet{}},
		{Net: &BootNet{Addr: netip.MustParsePrefix("10.77.0.2/16")}},
	} {
		if got, err := bad.CmdlineArgs(); err == nil {
			t.Errorf("CmdlineArgs(%+v) = %q, want an error", bad, got)
		}
	}
}

// An older host ignores the new ping fields, and a newer host reads an
// older agent's answer without them.
func TestPingFieldsOptional(t *testing.T) {
	old := `{"v":1,"id":1,"ok":true,"boot_id":"b","uptime_ns":5,"agent_version":"old","protocol_version":1}`
	var r Response
	if err := json.Unmarshal([]byte(old), &r); err != nil {
		t.Fatal(err)
	}
	if r.Hostname != "" || r.Addresses != nil || r.BootConfigError != "" {
		t.Errorf("old answer read as %+v", r)
	}
	b, err := json.Marshal(Response{V: 1, ID: 1, OK: true, BootID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"hostname", "addresses", "boot_config_error"} {
		if strings.Contains(string(b), f) {
			t.Errorf("%s present while empty: %s", f, b)
		}
	}
}
