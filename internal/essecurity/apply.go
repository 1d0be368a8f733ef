package essecurity

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/elastic/go-elasticsearch/v8/esapi"
)

// Secrets is where Apply reads users' passwords and writes API keys.
type Secrets interface {
	// Read returns the secret's value, or an error wrapping fs.ErrNotExist.
	Read(name string) (string, error)
	// Write stores a new secret readable by its owner only.
	Write(name, value string) error
}

// Dir keeps secrets as files in a directory, one per secret, as compose mounts
// them under /run/secrets.
type Dir string

// Read returns the file's content without its trailing newline.
func (d Dir) Read(name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(string(d), name))
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// Write creates the file with mode 0600, never replacing one.
func (d Dir) Write(name, value string) error {
	f, err := os.OpenFile(filepath.Join(string(d), name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(value + "\n"); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// minPassword is Elasticsearch's own minimum for native users.
const minPassword = 6

// Apply creates or updates f's roles and users in the cluster behind es, and
// creates the API keys whose secret does not exist yet. It is safe to run again:
// roles and users are overwritten with the file's definition (passwords
// included), and existing keys are kept. It writes one line per account to out.
func Apply(ctx context.Context, es esapi.Transport, f File, secrets Secrets, out io.Writer) error {
	for _, name := range slices.Sorted(maps.Keys(f.Roles)) {
		var answer struct {
			Role struct {
				Created bool `json:"created"`
			} `json:"role"`
		}
		body, _ := json.Marshal(f.Roles[name])
		req := esapi.SecurityPutRoleRequest{Name: name, Body: bytes.NewReader(body), Refresh: "wait_for"}
		if err := do(ctx, es, req, &answer); err != nil {
			return fmt.Errorf("role %s: %w", name, err)
		}
		fmt.Fprintf(out, "role %s %s\n", name, createdOrUpdated(answer.Role.Created))
	}
	for _, name := range slices.Sorted(maps.Keys(f.Users)) {
		u := f.Users[name]
		password, err := secrets.Read(u.PasswordSecret)
		if err != nil {
			return fmt.Errorf("user %s: password secret %s: %w", name, u.PasswordSecret, err)
		}
		if len(password) < minPassword {
			return fmt.Errorf("user %s: password secret %s: Elasticsearch needs at least %d characters", name, u.PasswordSecret, minPassword)
		}
		var answer struct {
			Created bool `json:"created"`
		}
		body, _ := json.Marshal(map[string]any{"password": password, "roles": u.Roles})
		req := esapi.SecurityPutUserRequest{Username: name, Body: bytes.NewReader(body), Refresh: "wait_for"}
		if err := do(ctx, es, req, &answer); err != nil {
			return fmt.Errorf("user %s: %w", name, err)
		}
		fmt.Fprintf(out, "user %s %s, roles %s\n", name, createdOrUpdated(answer.Created), strings.Join(u.Roles, ", "))
	}
	for _, name := range slices.Sorted(maps.Keys(f.APIKeys)) {
		k := f.APIKeys[name]
		switch _, err := secrets.Read(k.Secret); {
		case err == nil:
			fmt.Fprintf(out, "api key %s kept: secret %s exists (delete it, and invalidate the key, to make a new one)\n", name, k.Secret)
			continue
		case !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("api key %s: secret %s: %w", name, k.Secret, err)
		}
		// A key's privileges are those of its role descriptors, intersected with its
		// creator's: created by a superuser, it has exactly its roles'.
		descriptors := map[string]Role{}
		for _, r := range k.Roles {
			d := f.Roles[r]
			d.Description = "" // a key's role descriptors take none
			descriptors[r] = d
		}
		request := map[string]any{"name": name, "role_descriptors": descriptors}
		if k.Expiration != "" {
			request["expiration"] = k.Expiration
		}
		var answer struct {
			ID      string `json:"id"`
			Encoded string `json:"encoded"`
		}
		body, _ := json.Marshal(request)
		if err := do(ctx, es, esapi.SecurityCreateAPIKeyRequest{Body: bytes.NewReader(body), Refresh: "wait_for"}, &answer); err != nil {
			return fmt.Errorf("api key %s: %w", name, err)
		}
		if err := secrets.Write(k.Secret, answer.Encoded); err != nil {
			return fmt.Errorf("api key %s (id %s) was created but its secret %s could not be written; invalidate it: %w", name, answer.ID, k.Secret, err)
		}
		fmt.Fprintf(out, "api key %s created (id %s), roles %s, written to secret %s\n", name, answer.ID, strings.Join(k.Roles, ", "), k.Secret)
	}
	return nil
}

func createdOrUpdated(created bool) string {
	if created {
		return "created"
	}
	return "updated"
}

// request is what the esapi request types share.
type request interface {
	Do(ctx context.Context, t esapi.Transport) (*esapi.Response, error)
}

// do sends req and decodes a successful answer into v; an error answer becomes
// an error carrying Elasticsearch's reason, which names what it refused.
func do(ctx context.Context, es esapi.Transport, req request, v any) error {
	res, err := req.Do(ctx, es)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.IsError() {
		var e struct {
			Error struct {
				Type   string `json:"type"`
				Reason string `json:"reason"`
			} `json:"error"`
		}
		body, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
		if json.Unmarshal(body, &e) == nil && e.Error.Reason != "" {
			return fmt.Errorf("elasticsearch answered %s: %s: %s", res.Status(), e.Error.Type, e.Error.Reason)
		}
		return fmt.Errorf("elasticsearch answered %s: %s", res.Status(), bytes.TrimSpace(body))
	}
	return json.NewDecoder(res.Body).Decode(v)
}
