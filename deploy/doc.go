// Package deploy holds the bindsync container image (Dockerfile), its
// Kubernetes manifests (kustomize base and overlays) and example
// configurations. It has no Go code of its own: its tests render every
// kustomization and decode each object strictly into the Kubernetes API
// types, so a misspelled field or a lost safety setting (concurrencyPolicy,
// non-root user, read-only root filesystem, ...) fails `go test` instead of
// surfacing on a cluster at two in the morning.
package deploy
