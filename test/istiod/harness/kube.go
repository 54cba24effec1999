package harness

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Kube is a minimal REST+JSON client for the test API server: enough to apply objects with
// server-side apply, delete them, patch pod status and request tokens.
type Kube struct {
	Server string // https://127.0.0.1:<port>
	Token  string // bearer token with system:masters rights
	CAFile string // the API server's self-signed serving certificate
	http   *http.Client
}

// apiServerName is a name on the API server's self-signed serving certificate.
const apiServerName = "kubernetes.default.svc"

func newKube(server, token, caFile string) (*Kube, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", caFile)
	}
	return &Kube{Server: server, Token: token, CAFile: caFile, http: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: apiServerName}},
	}}, nil
}

// Object is a Kubernetes object as generic JSON.
type Object = map[string]any

// StatusError is a non-2xx answer of the API server.
type StatusError struct {
	Code int
	Body string
}

func (e *StatusError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.Code, e.Body) }

// IsNotFound reports whether err is a 404 of the API server.
func IsNotFound(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Code == http.StatusNotFound
}

// Do sends a request with a JSON (or patch) body and decodes a JSON answer into out (if not nil).
func (k *Kube) Do(ctx context.Context, method, path, contentType string, body any, out any) error {
	var r io.Reader
	if body != nil {
		b, ok := body.([]byte)
		if !ok {
			var err error
			if b, err = json.Marshal(body); err != nil {
				return err
			}
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, k.Server+path, r)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+k.Token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		if contentType == "" {
			contentType = "application/json"
		}
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := k.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return &StatusError{Code: resp.StatusCode, Body: strings.TrimSpace(string(b))}
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// Path returns the REST path of obj (its collection when name is empty).
func Path(obj Object) (string, error) {
	apiVersion, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	meta, _ := obj["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	ns, _ := meta["namespace"].(string)
	if apiVersion == "" || kind == "" || name == "" {
		return "", fmt.Errorf("object without apiVersion, kind or metadata.name: %v", obj)
	}
	p := "/apis/" + apiVersion
	if apiVersion == "v1" {
		p = "/api/v1"
	}
	if clusterScoped[kind] {
		ns = ""
	} else if ns == "" {
		ns = "default"
	}
	if ns != "" {
		p += "/namespaces/" + ns
	}
	return p + "/" + plural(kind) + "/" + url.PathEscape(name), nil
}

var clusterScoped = map[string]bool{"Namespace": true, "CustomResourceDefinition": true, "Node": true,
	"ClusterRole": true, "ClusterRoleBinding": true}

// plural is the resource name of kind, by the rule Kubernetes and Istio follow for every kind
// the tests use.
func plural(kind string) string {
	k := strings.ToLower(kind)
	switch {
	case strings.HasSuffix(k, "y"):
		return k[:len(k)-1] + "ies"
	case strings.HasSuffix(k, "s"):
		return k + "es"
	}
	return k + "s"
}

// Apply creates or updates obj with server-side apply (so applying the same object twice is a
// no-op, and a changed one is an update).
func (k *Kube) Apply(ctx context.Context, obj Object) error {
	p, err := Path(obj)
	if err != nil {
		return err
	}
	if err := k.Do(ctx, http.MethodPatch, p+"?fieldManager=amesh-e2e&force=true", "application/apply-patch+yaml", obj, nil); err != nil {
		return fmt.Errorf("apply %s: %w", p, err)
	}
	return nil
}

// DryRunApply is Apply with dryRun=All: the API server validates, defaults and admits obj as
// it would store it, and stores nothing.
func (k *Kube) DryRunApply(ctx context.Context, obj Object) error {
	p, err := Path(obj)
	if err != nil {
		return err
	}
	if err := k.Do(ctx, http.MethodPatch, p+"?fieldManager=amesh-e2e&force=true&dryRun=All", "application/apply-patch+yaml", obj, nil); err != nil {
		return fmt.Errorf("dry-run apply %s: %w", p, err)
	}
	return nil
}

// Delete deletes obj; a missing object is not an error.
func (k *Kube) Delete(ctx context.Context, obj Object) error {
	p, err := Path(obj)
	if err != nil {
		return err
	}
	if err := k.Do(ctx, http.MethodDelete, p, "", nil, nil); err != nil && !IsNotFound(err) {
		return fmt.Errorf("delete %s: %w", p, err)
	}
	return nil
}

// Get reads the object at the REST path p.
func (k *Kube) Get(ctx context.Context, p string) (Object, error) {
	var o Object
	err := k.Do(ctx, http.MethodGet, p, "", nil, &o)
	return o, err
}

// PatchStatus merge-patches the status subresource of obj.
func (k *Kube) PatchStatus(ctx context.Context, obj Object, status map[string]any) error {
	p, err := Path(obj)
	if err != nil {
		return err
	}
	return k.Do(ctx, http.MethodPatch, p+"/status", "application/merge-patch+json", map[string]any{"status": status}, nil)
}

// ApplyAll applies every object in order. An object that carries a status (pods, here: there
// is no kubelet) gets it written through the status subresource after the apply.
func (k *Kube) ApplyAll(ctx context.Context, objs []Object) error {
	for _, o := range objs {
		if err := k.Apply(ctx, o); err != nil {
			return err
		}
		if st, ok := o["status"].(map[string]any); ok && o["kind"] != "CustomResourceDefinition" {
			if err := k.PatchStatus(ctx, o, st); err != nil {
				return fmt.Errorf("status of %v: %w", o["metadata"], err)
			}
		}
	}
	return nil
}

// TokenRequest asks the API server for a service-account token with the given audience.
func (k *Kube) TokenRequest(ctx context.Context, ns, sa, audience string, ttl time.Duration) (string, error) {
	req := Object{
		"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
		"spec": map[string]any{"audiences": []string{audience}, "expirationSeconds": int64(ttl.Seconds())},
	}
	var out struct {
		Status struct{ Token string } `json:"status"`
	}
	p := "/api/v1/namespaces/" + ns + "/serviceaccounts/" + sa + "/token"
	if err := k.Do(ctx, http.MethodPost, p, "", req, &out); err != nil {
		return "", fmt.Errorf("token request for %s/%s: %w", ns, sa, err)
	}
	return out.Status.Token, nil
}

// ParseYAML splits a multi-document YAML stream into objects (empty documents skipped).
func ParseYAML(data []byte) ([]Object, error) {
	var objs []Object
	for i, doc := range splitYAML(data) {
		var o Object
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(o) > 0 {
			objs = append(objs, o)
		}
	}
	return objs, nil
}

func splitYAML(data []byte) []string {
	var docs []string
	var cur strings.Builder
	for line := range strings.Lines(string(data)) {
		if strings.TrimRight(line, " \r\n") == "---" {
			docs = append(docs, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteString(line)
	}
	return append(docs, cur.String())
}
