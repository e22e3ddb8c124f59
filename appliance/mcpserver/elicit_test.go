package mcpserver

import (
	"context"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// elicitSession is memSession with a client that answers elicitations.
func elicitSession(t *testing.T, b Backend, answer func(*mcp.ElicitRequest) *mcp.ElicitResult) *mcp.ClientSession {
	t.Helper()
	ct, st := mcp.NewInMemoryTransports()
	ctx := context.Background()
	ss, err := New(b, Options{Caller: "test"}).Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ss.Close() })
	c := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "1"}, &mcp.ClientOptions{
		ElicitationHandler: func(_ context.Context, r *mcp.ElicitRequest) (*mcp.ElicitResult, error) { return answer(r), nil },
	})
	cs, err := c.Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// TestElicitation: a client that can ask its user shows the preview; no
// changes nothing and gives no confirmation to go around the user; yes
// acts in the one call.
func TestElicitation(t *testing.T) {
	f := newFixture(t)
	var asked []string
	no := elicitSession(t, Local(f.app, f.principalA, nil), func(r *mcp.ElicitRequest) *mcp.ElicitResult {
		asked = append(asked, r.Params.Message)
		return &mcp.ElicitResult{Action: "decline"}
	})
	before := digest(t, f.st)
	var out destructiveOut
	mustCall(t, no, ToolDestroyVM, map[string]any{"vm": f.vmA}, &out)
	if out.Done || !out.Declined || out.Preview == nil || out.Preview.Confirm != "" {
		t.Fatalf("declined destroy = %+v", out)
	}
	if len(asked) != 1 || !strings.Contains(asked[0], "graveyard") || !strings.Contains(asked[0], f.vmA) {
		t.Fatalf("the user was asked %q", asked)
	}
	if digest(t, f.st) != before {
		t.Fatal("a declined destroy changed the store")
	}

	yes := elicitSession(t, Local(f.app, f.principalA, nil), func(r *mcp.ElicitRequest) *mcp.ElicitResult {
		return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"confirm": true}}
	})
	mustCall(t, yes, ToolDestroyVM, map[string]any{"vm": f.vmA}, &out)
	if !out.Done || out.Operation == nil {
		t.Fatalf("accepted destroy = %+v", out)
	}
	waitOp(t, f.app, out.Operation.ID)
	if vm, _ := f.app.VM(context.Background(), f.vmA); vm.State != "graveyard" {
		t.Fatalf("after an accepted destroy: %s", vm.State)
	}
	// Accept without saying yes is no.
	sly := elicitSession(t, Local(f.app, f.principalA, nil), func(r *mcp.ElicitRequest) *mcp.ElicitResult {
		return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"confirm": false}}
	})
	mustCall(t, sly, ToolDestroyVM, map[string]any{"vm": f.vmA}, &out)
	if out.Done || !out.Declined {
		t.Fatalf("accept with confirm false = %+v", out)
	}
}

// TestElicitationForged: an answer the server did not ask for (no request
// state, a forged one, or a two-phase confirmation passed as request
// state) acts on nothing.
func TestElicitationForged(t *testing.T) {
	b := &fakeBackend{}
	cs := memSession(t, b, Options{Caller: "test"})
	var pre destructiveOut
	mustCall(t, cs, ToolDestroyVM, map[string]any{"vm": "vm-abc123"}, &pre)
	yes := mcp.InputResponseMap{"confirm": &mcp.ElicitResult{Action: "accept", Content: map[string]any{"confirm": true}}}
	for name, state := range map[string]string{"none": "", "forged": "sjc1." + strings.Repeat("A", 54), "a confirm value": pre.Preview.Confirm} {
		res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: ToolDestroyVM, Arguments: map[string]any{"vm": "vm-abc123"},
			InputResponses: yes, RequestState: state})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if state != "" && !res.IsError {
			t.Errorf("%s request state: not refused", name)
		}
	}
	if n := b.destructive.Load(); n != 0 {
		t.Fatalf("a forged elicitation answer acted %d times", n)
	}
}
