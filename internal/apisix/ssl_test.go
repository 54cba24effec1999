package apisix

import (
	"encoding/json"
	"strings"
	"testing"
)

// Redact hides the private keys of ssl objects, and only those: whatever else the
// object holds is shown as it is, an ssl it cannot decode is hidden whole, and other
// kinds pass unchanged.
func TestRedact(t *testing.T) {
	const secret = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBsecretsecret\n-----END EC PRIVATE KEY-----\n"
	ssl := SSL{ID: "s", Type: "server", SNI: "*", Cert: "CERT", Key: secret, Client: &SSLClient{CA: "ROOT", Depth: 100}}
	b, err := Encode(ssl)
	if err != nil {
		t.Fatal(err)
	}
	var got SSL
	if err := json.Unmarshal(Redact("/ssls/s", b), &got); err != nil {
		t.Fatal(err)
	}
	want := ssl
	want.Key = RedactedKey
	if got.Key != want.Key || got.Cert != want.Cert || got.SNI != want.SNI || *got.Client != *want.Client || got.Type != want.Type {
		t.Errorf("redacted %+v, want %+v", got, want)
	}

	multi := []byte(`{"id":"m","cert":"C","key":"` + strings.ReplaceAll(secret, "\n", `\n`) + `","certs":["C2"],"keys":["` + strings.ReplaceAll(secret, "\n", `\n`) + `"]}`)
	for _, tc := range []struct {
		key  string
		in   []byte
		want string
	}{
		{"/ssls/m", multi, `{"cert":"C","certs":["C2"],"id":"m","key":"[redacted]","keys":["[redacted]"]}`},
		{"/ssls/bad", []byte(`{"key":"` + secret), `"[redacted]"`},
		{"/ssls/odd", []byte(`{"keys":"` + strings.ReplaceAll(secret, "\n", `\n`) + `"}`), `{"keys":"[redacted]"}`},
		{"/routes/r", []byte(`{"id":"r","key":"not a secret"}`), `{"id":"r","key":"not a secret"}`},
	} {
		if got := string(Redact(tc.key, tc.in)); got != tc.want {
			t.Errorf("Redact(%s) = %s, want %s", tc.key, got, tc.want)
		}
	}
}
