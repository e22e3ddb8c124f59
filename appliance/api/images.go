package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/superjolt/superjolt/appliance/model"
)

// ImportImage uploads a root file system tarball or a raw or qcow2 disk
// (size bytes from r, called file where it came from) as the image name, calling progress with each step
// the daemon reports, and returns the image once it is made.
func (c *Client) ImportImage(ctx context.Context, name, file string, r io.Reader, size int64, progress func(string)) (model.Image, error) {
	u := "/v1/images/import?" + url.Values{"name": {name}, "file": {file}}.Encode()
	req, err := c.newRequest(ctx, http.MethodPost, u, io.NopCloser(r))
	if err != nil {
		return model.Image{}, fmt.Errorf("%w: import image: %v", model.ErrInvalid, err)
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Accept", "application/x-ndjson")
	return c.imageStream(ctx, req, progress)
}

// BuildImage asks the daemon to build an image from a recipe; see
// ImportImage for progress.
func (c *Client) BuildImage(ctx context.Context, in BuildImageRequest, progress func(string)) (model.Image, error) {
	resp, err := c.send(ctx, http.MethodPost, "/v1/images/build", nil, in)
	if err != nil {
		return model.Image{}, err
	}
	return readImageStream(ctx, resp, progress)
}

func (c *Client) imageStream(ctx context.Context, req *http.Request, progress func(string)) (model.Image, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return model.Image{}, ctx.Err()
		}
		return model.Image{}, c.unreachable(err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return model.Image{}, c.decodeError(resp)
	}
	return readImageStream(ctx, resp, progress)
}

// readImageStream reads an ImageProgress stream to its last line.
func readImageStream(ctx context.Context, resp *http.Response, progress func(string)) (model.Image, error) {
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), MaxRequestBytes)
	for sc.Scan() {
		var p ImageProgress
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			return model.Image{}, fmt.Errorf("cannot read the answer of superjoltd: %w", err)
		}
		switch {
		case p.Error != nil:
			return model.Image{}, &Error{Code: p.Error.Code, Message: p.Error.Message, Status: resp.StatusCode}
		case p.Image != nil:
			return *p.Image, nil
		case p.Progress != "" && progress != nil:
			progress(p.Progress)
		}
	}
	if ctx.Err() != nil {
		return model.Image{}, ctx.Err()
	}
	return model.Image{}, fmt.Errorf("%w: superjoltd stopped answering before the image was made (%v); `superjolt image list` shows whether it was", model.ErrUnavailable, sc.Err())
}

// DeleteImage removes an image; VMs made from it keep their own disks.
func (c *Client) DeleteImage(ctx context.Context, name string) (model.Image, error) {
	var im model.Image
	return im, c.do(ctx, http.MethodDelete, "/v1/images/"+url.PathEscape(name), nil, nil, &im)
}
