package translate

// JWKS. Envoy's jwt_authn reads a provider's JSON Web Key Set (RFC 7517) as Google's
// jwt_verify_lib does; amesh converts each usable key to a PEM SubjectPublicKeyInfo
// here, so the Lua side only hands DER to libcrypto. A key Envoy would skip (bad
// fields, an alg that does not fit its kty or curve) is skipped here too.

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// jwtKey is one verification key in the plugin's config.
type jwtKey struct {
	Kid string `json:"kid,omitempty"`
	Alg string `json:"alg,omitempty"`
	Kty string `json:"kty"`           // RSA, EC or OKP
	Crv string `json:"crv,omitempty"` // EC and OKP
	PEM string `json:"pem"`
}

// jwk is the JSON of one key of a set; fields are raw so a field of the wrong type
// is told apart from a missing one.
type jwk map[string]json.RawMessage

func (k jwk) str(name string) (string, bool, error) {
	raw, ok := k[name]
	if !ok {
		return "", false, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", true, fmt.Errorf("[%s] is not a string", name)
	}
	return s, true, nil
}

// b64url decodes as absl::WebSafeBase64Unescape: URL alphabet, padding optional.
func b64url(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

// publicOnlyModulus starts the modulus of the key istiod puts in place of a JWKS it
// could not fetch (pilot/pkg/model's PublicOnlyJwks): nobody holds its private key,
// so every token of that provider fails verification, in Envoy as here.
const publicOnlyModulus = "0xObjM0UvS_oaazjpEYlAbwctEJ4L8pH3OuTb7qth7gUwqet"

// errSymmetricKey: an oct key, which Envoy uses and amesh does not.
var errSymmetricKey = errors.New("a symmetric (oct) key, which amesh does not carry")

// parseJWKS returns the usable keys of a JSON Web Key Set, what it skipped and
// whether it holds istiod's placeholder for a JWKS it could not fetch.
func parseJWKS(text string) (keys []jwtKey, skipped []string, placeholder bool, err error) {
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal([]byte(text), &set); err != nil {
		return nil, nil, false, errors.New("the JWKS is not a JSON key set")
	}
	for i, k := range set.Keys {
		key, err := convertJWK(k)
		if errors.Is(err, errSymmetricKey) {
			return nil, nil, false, err
		}
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("key %d: %v", i, err))
			continue
		}
		if n, _, _ := k.str("n"); strings.HasPrefix(n, publicOnlyModulus) {
			placeholder = true
		}
		keys = append(keys, key)
	}
	return keys, skipped, placeholder, nil
}

func convertJWK(k jwk) (jwtKey, error) {
	kty, ok, err := k.str("kty")
	switch {
	case err != nil:
		return jwtKey{}, errors.New("[kty] is bad")
	case !ok:
		return jwtKey{}, errors.New("[kty] is missing")
	}
	out := jwtKey{Kty: kty}
	if out.Kid, _, err = k.str("kid"); err != nil {
		return jwtKey{}, err
	}
	if out.Alg, _, err = k.str("alg"); err != nil {
		return jwtKey{}, err
	}
	var pub any
	switch kty {
	case "RSA":
		if out.Alg != "" && !strings.HasPrefix(out.Alg, "RS") && !strings.HasPrefix(out.Alg, "PS") {
			return jwtKey{}, errors.New("[alg] is not started with [RS] or [PS] for an RSA key")
		}
		n, okN, errN := k.str("n")
		e, okE, errE := k.str("e")
		if !okN || !okE || errN != nil || errE != nil {
			return jwtKey{}, errors.New("[n] or [e] is missing or not a string")
		}
		nb, err1 := b64url(n)
		eb, err2 := b64url(e)
		if err1 != nil || err2 != nil || len(nb) == 0 || len(eb) == 0 || len(eb) > 4 {
			return jwtKey{}, errors.New("RSA [n] or [e] has a parse error")
		}
		ev := new(big.Int).SetBytes(eb)
		pub = &rsa.PublicKey{N: new(big.Int).SetBytes(nb), E: int(ev.Int64())}
	case "EC":
		crv, _, err := k.str("crv")
		if err != nil {
			return jwtKey{}, err
		}
		if out.Alg != "" && !strings.HasPrefix(out.Alg, "ES") {
			return jwtKey{}, errors.New("[alg] is not started with [ES] for an EC key")
		}
		if crv == "" {
			// jwt_verify_lib takes the curve from alg when crv is absent.
			crv = map[string]string{"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}[out.Alg]
		}
		curves := map[string]struct {
			alg string
			c   elliptic.Curve
		}{"P-256": {"ES256", elliptic.P256()}, "P-384": {"ES384", elliptic.P384()}, "P-521": {"ES512", elliptic.P521()}}
		c, ok := curves[crv]
		switch {
		case !ok:
			return jwtKey{}, errors.New("[crv] or [alg] is not supported for an EC key")
		case out.Alg != "" && out.Alg != c.alg:
			return jwtKey{}, errors.New("[crv] is not compatible with [alg] for an EC key")
		}
		x, _, errX := k.str("x")
		y, _, errY := k.str("y")
		xb, err1 := b64url(x)
		yb, err2 := b64url(y)
		size := (c.c.Params().BitSize + 7) / 8
		if errX != nil || errY != nil || err1 != nil || err2 != nil || len(xb) > size || len(yb) > size {
			return jwtKey{}, errors.New("EC [x] or [y] has a parse error")
		}
		point := make([]byte, 1+2*size)
		point[0] = 4
		copy(point[1+size-len(xb):1+size], xb)
		copy(point[1+2*size-len(yb):], yb)
		k, err := ecdsa.ParseUncompressedPublicKey(c.c, point)
		if err != nil {
			return jwtKey{}, errors.New("EC [x] and [y] are not a point of the curve")
		}
		out.Crv = crv
		pub = k
	case "OKP":
		crv, _, err := k.str("crv")
		switch {
		case err != nil:
			return jwtKey{}, err
		case out.Alg != "" && out.Alg != "EdDSA":
			return jwtKey{}, errors.New("[alg] is not [EdDSA] for an OKP key")
		case crv != "Ed25519":
			return jwtKey{}, errors.New("[crv] is not supported for an OKP key")
		}
		x, _, err := k.str("x")
		xb, err2 := b64url(x)
		if err != nil || err2 != nil || len(xb) != ed25519.PublicKeySize {
			return jwtKey{}, errors.New("OKP [x] has a parse error")
		}
		out.Crv = crv
		pub = ed25519.PublicKey(xb)
	case "oct":
		// Envoy verifies HMAC tokens with them; amesh does not carry secrets.
		return jwtKey{}, errSymmetricKey
	default:
		return jwtKey{}, fmt.Errorf("[kty] %q is not supported", kty)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return jwtKey{}, err
	}
	out.PEM = string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	return out, nil
}
