package server

import (
	"context"
	"fmt"
	"strings"

	authnv1 "k8s.io/api/authentication/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Identity is who a verified service-account token belongs to.
type Identity struct {
	Namespace, ServiceAccount string
	// Pod is the pod the token is bound to (projected tokens), or "" if unbound.
	Pod string
}

// Authenticator verifies a bearer token.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (Identity, error)
}

// TokenReviewer verifies tokens with the API server's TokenReview API, so a token is
// accepted exactly when the API server itself would accept it (signature, expiry,
// audience, a bound pod that still exists).
type TokenReviewer struct {
	Client client.Client
	// Audiences the token must be issued for; empty means the API server's own.
	Audiences []string
}

// Authenticate implements Authenticator.
func (r *TokenReviewer) Authenticate(ctx context.Context, token string) (Identity, error) {
	tr := &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token, Audiences: r.Audiences}}
	if err := r.Client.Create(ctx, tr); err != nil {
		return Identity{}, fmt.Errorf("token review: %w", err)
	}
	if !tr.Status.Authenticated {
		return Identity{}, fmt.Errorf("token not authenticated: %s", tr.Status.Error)
	}
	// Service accounts authenticate as system:serviceaccount:<namespace>:<name>.
	parts := strings.Split(tr.Status.User.Username, ":")
	if len(parts) != 4 || parts[0] != "system" || parts[1] != "serviceaccount" {
		return Identity{}, fmt.Errorf("%q is not a service account", tr.Status.User.Username)
	}
	id := Identity{Namespace: parts[2], ServiceAccount: parts[3]}
	if pods := tr.Status.User.Extra["authentication.kubernetes.io/pod-name"]; len(pods) == 1 {
		id.Pod = pods[0]
	}
	return id, nil
}
