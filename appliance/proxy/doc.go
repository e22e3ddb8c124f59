// Package proxy is superjoltd's reverse proxy for domains (DESIGN.md,
// "Networking"): it routes HTTP and HTTPS by host name to the VM that holds
// the domain, and chooses the TLS certificate for each name.
//
// # Routing
//
// The daemon supplies a [Router] that answers, for a host name, the VM's
// address and port ([Route]). The proxy asks it on every request with the
// request's Host reduced to a bare name (port stripped, lowercase, no trailing
// dot; see [NormalizeHost]), the same form as appliance/model's normalized
// domains. A routed request is passed to http://ADDR/ by
// [net/http/httputil.ReverseProxy] with the original Host header kept and
// X-Forwarded-For, X-Forwarded-Host and X-Forwarded-Proto set (any such headers
// from the client are dropped first). Responses are flushed as they are
// written, so streaming responses (server-sent events, long polls) pass
// through, and protocol upgrades (WebSocket) are passed through as raw
// connections. An unknown host gets a plain 404 page that names no VM and no
// domain; a VM that does not answer gets a 502 page that names no address.
//
// # Serving
//
// The daemon owns the listeners (--http-listen, default :80, and
// --https-listen, default :443) and hands them to [Proxy.Serve] (plain HTTP)
// and [Proxy.ServeTLS] (HTTPS, HTTP/2 and HTTP/1.1); [Proxy.Close] and
// [Proxy.Shutdown] stop both. [Proxy.Handler] and [Proxy.TLSConfig] are there
// for a daemon that builds its own servers. Plain HTTP is proxied as is, not
// redirected to HTTPS: with the local CA a client may not trust HTTPS yet.
//
// # Certificates
//
// For the TLS server name (SNI) of each handshake, in this order:
//
//  1. The operator's own certificate: files NAME.crt and NAME.key (PEM, the
//     chain in the .crt) in Options.CertDir. They are served for NAME whether
//     or not NAME is routed. The files are stat'ed on every handshake and read
//     again when their size or modification time changed, so an operator
//     replaces a certificate by replacing the files, without a restart. Files
//     that do not load fail the handshake (and are logged) rather than fall
//     back to the local CA behind the operator's back.
//  2. For a routed name only: the operator's default certificate, default.crt
//     and default.key in CertDir, if it is valid for the name (its SANs cover
//     it, wildcards included).
//  3. For a routed name only: a certificate issued on the fly by the local
//     [CA] (ECDSA P-256, SAN = the name, valid 90 days), kept in memory per
//     name and issued again when less than 30 days are left.
//
// A name that is neither routed nor covered by an operator file gets no
// certificate: the handshake fails. The local CA never issues for a name that
// is not routed, and a handshake without SNI (a bare IP) fails too.
//
// [LoadOrCreateCA] creates the local CA once in a directory (ca.crt 0644,
// ca.key 0600) and loads it afterwards, so it is the same across restarts;
// [CA.CertPEM] is what `superjolt` prints for clients to trust.
//
// ACME (github.com/caddyserver/certmagic, for a box with a public name) is
// for a later change: it needs a public address and a reachable ACME server,
// so it cannot be tested on these machines, where traffic stays on loopback
// and in test-made network namespaces.
package proxy
