// Package reconciler keeps AmeshPluginConfig status up to date: whether the config is
// accepted (validate.Spec), whether it is being served, and how many pods it selects.
// Distribution itself is the server package's job; the reconciler only reports.
package reconciler

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/amesh-dev/amesh/controller/api/v1alpha1"
	"github.com/amesh-dev/amesh/controller/internal/validate"
)

// Reconciler writes the status of AmeshPluginConfig objects.
type Reconciler struct {
	client.Client
}

// +kubebuilder:rbac:groups=mesh.amesh.dev,resources=ameshpluginconfigs,verbs=get;list;watch
// +kubebuilder:rbac:groups=mesh.amesh.dev,resources=ameshpluginconfigs/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create

// Reconcile recomputes one config's status.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var c v1alpha1.AmeshPluginConfig
	if err := r.Get(ctx, req.NamespacedName, &c); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	next := c.Status.DeepCopy()
	next.ObservedGeneration = c.Generation
	next.MatchedPods = 0

	verr := validate.Spec(&c.Spec)
	if verr == nil {
		n, err := r.countPods(ctx, &c)
		if err != nil {
			return reconcile.Result{}, err
		}
		next.MatchedPods = n
	}
	setConditions(next, c.Generation, verr)

	if equality.Semantic.DeepEqual(&c.Status, next) {
		return reconcile.Result{}, nil
	}
	c.Status = *next
	if err := r.Status().Update(ctx, &c); err != nil {
		if apierrors.IsConflict(err) {
			// Our cached copy is stale; the newer version is on its way.
			return reconcile.Result{RequeueAfter: 200 * time.Millisecond}, nil
		}
		return reconcile.Result{}, err
	}
	logf.FromContext(ctx).V(1).Info("status updated", "accepted", verr == nil, "pods", next.MatchedPods)
	return reconcile.Result{}, nil
}

func setConditions(st *v1alpha1.AmeshPluginConfigStatus, gen int64, verr error) {
	accepted := metav1.Condition{Type: v1alpha1.ConditionAccepted, ObservedGeneration: gen,
		Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonAccepted, Message: "all plugins are valid"}
	ready := metav1.Condition{Type: v1alpha1.ConditionReady, ObservedGeneration: gen,
		Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonServing,
		Message: fmt.Sprintf("served to the sidecars of %d pod(s)", st.MatchedPods)}
	if verr != nil {
		reason, msg := v1alpha1.ReasonInvalidSpec, verr.Error()
		if ve, ok := verr.(*validate.Error); ok {
			reason, msg = ve.Reason, ve.Message
		}
		accepted.Status, accepted.Reason, accepted.Message = metav1.ConditionFalse, reason, msg
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, v1alpha1.ReasonNotAccepted,
			"not sent to sidecars: "+msg
	}
	meta.SetStatusCondition(&st.Conditions, accepted)
	meta.SetStatusCondition(&st.Conditions, ready)
}

// countPods counts the running (not finished) pods the config selects.
func (r *Reconciler) countPods(ctx context.Context, c *v1alpha1.AmeshPluginConfig) (int32, error) {
	sel, err := validate.Selector(&c.Spec)
	if err != nil {
		return 0, nil // reported by validate.Spec
	}
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(c.Namespace), client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return 0, err
	}
	var n int32
	for i := range pods.Items {
		if p := &pods.Items[i]; p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			n++
		}
	}
	return n, nil
}

// SetupWithManager registers the reconciler: configs are reconciled on spec changes,
// and every config of a namespace when a pod there appears, goes, changes labels or
// finishes.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.AmeshPluginConfig{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(r.configsOfNamespace),
			builder.WithPredicates(podChange)).
		Named("ameshpluginconfig").
		Complete(r)
}

func (r *Reconciler) configsOfNamespace(ctx context.Context, obj client.Object) []reconcile.Request {
	var list v1alpha1.AmeshPluginConfigList
	if err := r.List(ctx, &list, client.InNamespace(obj.GetNamespace())); err != nil {
		logf.FromContext(ctx).Error(err, "list configs for pod event")
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, c := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&c)})
	}
	return reqs
}

// podChange passes pod events that can change a selection count.
var podChange = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld.(*corev1.Pod), e.ObjectNew.(*corev1.Pod)
		return !labels.Equals(o.Labels, n.Labels) || finished(o) != finished(n)
	},
}

func finished(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}
