package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
)

// RemoteOptions configure a client of superjoltd's remote API (superjoltd
// --listen).
type RemoteOptions struct {
	// Server is the server's URL, https://host:port.
	Server string
	// Token is the account token sent as "Authorization: Bearer <token>".
	Token string
	// CAPEM, when set, is the only certificate authority trusted for the
	// server's certificate (the operator prints it with `superjolt ca`):
	// the system's roots are then not used. Empty: the system's roots.
	CAPEM []byte
}

// NewRemoteClient returns a client that talks HTTPS to a superjoltd serving
// its remote API, with an account token. The rest of the Client is shared
// with the socket's: same methods, same errors. A 401 says how to get a new
// token; a 403 carries the server's message.
func NewRemoteClient(opts RemoteOptions) (*Client, error) {
	u, err := url.Parse(opts.Server)
	if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return nil, fmt.Errorf("%w: --server %q: give the server as https://HOST:PORT", model.ErrInvalid, opts.Server)
	}
	if opts.Token == "" {
		return nil, fmt.Errorf("%w: --server needs an account token: give --token or SUPERJOLT_TOKEN (the operator makes one with `superjolt account token create`)", model.ErrInvalid)
	}
	if strings.ContainsAny(opts.Token, " \t\r\n") {
		return nil, fmt.Errorf("%w: the token has spaces or line breaks in it: give it as printed", model.ErrInvalid)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(opts.CAPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(opts.CAPEM) {
			return nil, fmt.Errorf("%w: --ca holds no PEM certificate: save the output of `superjolt ca` from the operator", model.ErrInvalid)
		}
		tc.RootCAs = pool // pinned: no system roots
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	tr := &http.Transport{
		DialContext:         d.DialContext,
		TLSClientConfig:     tc,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConns:        4,
		IdleConnTimeout:     30 * time.Second,
		ForceAttemptHTTP2:   false,
	}
	return &Client{socket: u.Host, hc: &http.Client{Transport: tr}, base: "https://" + u.Host, token: opts.Token}, nil
}

// Remote reports whether the client talks to a remote server with a token.
func (c *Client) Remote() bool { return c.token != "" }

// newRequest makes a request to pathAndQuery on the client's server, with
// its token when it has one.
func (c *Client) newRequest(ctx context.Context, method, pathAndQuery string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+pathAndQuery, body)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}
