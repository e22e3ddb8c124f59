// Package server is superjoltd's side of the local API: an http.Handler that
// decodes requests strictly, checks ids, names and amounts before the
// appliance sees them, calls the appliance, and answers in JSON with the
// status of each error's category. The routes, bodies and error encoding are
// documented in package [github.com/superjolt/superjolt/appliance/api].
//
// [Server] satisfies http.Handler. [Listen] returns a net.Listener on a UNIX
// socket (a *net.UnixListener) with mode 0660, after removing a stale socket
// left by a daemon that died and refusing to start when another daemon still
// answers on it. [Server.Serve] serves a listener until its context ends.
//
// The appliance is reached through the [Appliance] interface declared here,
// which *appliance.Appliance satisfies.
//
// [Remote] is the remote API (superjoltd --listen): the same routes over
// TLS, for account tokens only (Authorization: Bearer), with failed
// authentications rate-limited per source. It serves a [Tenant], which
// scopes every call of the Appliance to the token's account; its doc
// comment holds the rule of each method.
package server
