// Package deploy holds the bindsync container image (Dockerfile), its
// Kubernetes manifests (kustomize base, overlays and components) and example
// configurations. It has no Go code of its own: its tests render every
// kustomization and decode each object strictly into the Kubernetes API
// types, so a misspelled field or a lost safety setting (concurrencyPolicy,
// non-root user, read-only root filesystem, a credential in a manifest, a
// placeholder left in an overlay, ...) fails `go test` instead of surfacing
// on a cluster at two in the morning. They also load the alert rules as
// Prometheus would, against the metrics bindsync exports.
//
// It is a Go module of its own (github.com/bindsync/bindsync/deploy), so that
// the Kubernetes, kustomize and Prometheus modules its tests need stay out of
// the main module's build; a replace directive points it at the bindsync
// checkout around it.
package deploy
