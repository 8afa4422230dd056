package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	k8sjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/bindsync/bindsync/config"
)

const (
	// nonRootUID is the user of the distroless :nonroot image (see Dockerfile).
	nonRootUID = 65532
	// imageName is the last path element of every container image.
	imageName = "bindsync"
	// containerName is the container that podFailurePolicy refers to.
	containerName = "bindsync"
	// nameLabel is on every rendered object: the switch commands of
	// README.md select by it.
	nameLabel, nameValue = "app.kubernetes.io/name", "bindsync"
	// workloadIdentityNamespace and serviceAccountName make the Workload
	// Identity member PROJECT_ID.svc.id.goog[bindsync/bindsync] of README.md.
	workloadIdentityNamespace, serviceAccountName = "bindsync", "bindsync"
)

// object is what every rendered object has, whatever its kind.
type object struct {
	apiVersion, kind, namespace, name string
	labels                            map[string]string
}

func (o object) String() string { return o.kind + " " + o.name }

// rendered is the output of one kustomization, every object decoded
// strictly into its Kubernetes API type.
type rendered struct {
	objects         []object
	cronJobs        []batchv1.CronJob
	deployments     []appsv1.Deployment
	services        []corev1.Service
	configMaps      map[string]corev1.ConfigMap
	secrets         map[string]corev1.Secret
	serviceAccounts map[string]corev1.ServiceAccount
	claims          map[string]corev1.PersistentVolumeClaim
	rules           []monitoringv1.PrometheusRule
}

// resource is one object of kustomize's output, not yet decoded.
type resource struct {
	object
	data []byte
}

// build runs kustomize on dir of fsys.
func build(fsys filesys.FileSystem, dir string) ([]resource, error) {
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	var out []resource
	for _, res := range resMap.Resources() {
		o := object{apiVersion: res.GetApiVersion(), kind: res.GetKind(), namespace: res.GetNamespace(), name: res.GetName(), labels: res.GetLabels()}
		data, err := res.MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("marshal %s: %w", o, err)
		}
		out = append(out, resource{o, data})
	}
	return out, nil
}

// built caches kustomize's output per directory on disk: most tests render
// the same few kustomizations, and kustomize, not decoding, is the slow part.
var built sync.Map // dir -> func() ([]resource, error)

// renderDir renders the kustomization in dir on disk, decoding afresh on
// every call so that a test may change what it gets.
func renderDir(t *testing.T, dir string) *rendered {
	t.Helper()
	once, _ := built.LoadOrStore(dir, sync.OnceValues(func() ([]resource, error) {
		return build(filesys.MakeFsOnDisk(), dir)
	}))
	res, err := once.(func() ([]resource, error))()
	if err != nil {
		t.Fatal(err)
	}
	r, err := decode(res)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// render runs kustomize on dir of fsys and decodes every resource strictly:
// an unknown or misspelled field (compared case-sensitively, as the API
// server does), a duplicated field or a kind this test does not know is an
// error.
func render(fsys filesys.FileSystem, dir string) (*rendered, error) {
	res, err := build(fsys, dir)
	if err != nil {
		return nil, err
	}
	return decode(res)
}

func decode(res []resource) (*rendered, error) {
	r := &rendered{
		configMaps:      map[string]corev1.ConfigMap{},
		secrets:         map[string]corev1.Secret{},
		serviceAccounts: map[string]corev1.ServiceAccount{},
		claims:          map[string]corev1.PersistentVolumeClaim{},
	}
	for _, res := range res {
		if err := r.add(res.apiVersion, res.kind, res.data); err != nil {
			return nil, fmt.Errorf("decode %s %s: %w", res.apiVersion, res.object, err)
		}
		o := res.object
		o.labels = maps.Clone(o.labels)
		r.objects = append(r.objects, o)
	}
	return r, nil
}

// add decodes one object by its apiVersion and kind and files it in r.
func (r *rendered) add(apiVersion, kind string, data []byte) error {
	switch apiVersion + " " + kind {
	case "batch/v1 CronJob":
		return decodeAppend(data, &r.cronJobs)
	case "apps/v1 Deployment":
		return decodeAppend(data, &r.deployments)
	case "v1 Service":
		return decodeAppend(data, &r.services)
	case "monitoring.coreos.com/v1 PrometheusRule":
		return decodeAppend(data, &r.rules)
	case "v1 ConfigMap":
		return decodeInto(data, r.configMaps, func(o corev1.ConfigMap) string { return o.Name })
	case "v1 Secret":
		return decodeInto(data, r.secrets, func(o corev1.Secret) string { return o.Name })
	case "v1 ServiceAccount":
		return decodeInto(data, r.serviceAccounts, func(o corev1.ServiceAccount) string { return o.Name })
	case "v1 PersistentVolumeClaim":
		return decodeInto(data, r.claims, func(o corev1.PersistentVolumeClaim) string { return o.Name })
	default:
		return fmt.Errorf("unsupported kind %q (apiVersion %q): add it to rendered.add so it is checked", kind, apiVersion)
	}
}

// decodeAppend decodes one object strictly and appends it to s.
func decodeAppend[T any](data []byte, s *[]T) error {
	var o T
	if err := decodeStrict(data, &o); err != nil {
		return err
	}
	*s = append(*s, o)
	return nil
}

// decodeInto decodes one object strictly and stores it in m under its name.
func decodeInto[T any](data []byte, m map[string]T, name func(T) string) error {
	var o T
	if err := decodeStrict(data, &o); err != nil {
		return err
	}
	m[name(o)] = o
	return nil
}

// decodeStrict decodes JSON the way the API server's strict field validation
// does. encoding/json alone would accept "ConcurrencyPolicy" for
// "concurrencyPolicy", a field the API server then silently drops.
func decodeStrict(data []byte, v any) error {
	strictErrs, err := k8sjson.UnmarshalStrict(data, v, k8sjson.DisallowUnknownFields, k8sjson.DisallowDuplicateFields)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

// kustomizations lists the base and every overlay, found on disk so that a
// new overlay is checked without touching this test.
func kustomizations(t *testing.T) []string {
	t.Helper()
	overlays, err := filepath.Glob("kustomize/overlays/*/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(overlays) == 0 {
		t.Fatal("no overlays found under kustomize/overlays")
	}
	dirs := []string{"kustomize/base"}
	for _, o := range overlays {
		dirs = append(dirs, filepath.Dir(o))
	}
	return dirs
}

// isOverlay tells an overlay, which an operator applies, from the base,
// which only the overlays use and which keeps placeholders.
func isOverlay(dir string) bool {
	return strings.HasPrefix(filepath.ToSlash(dir), "kustomize/overlays/")
}

// problems returns every problem of the kustomization in dir: for an
// overlay, those of check and of checkDeployable.
func (r *rendered) problems(dir string) []error {
	errs := r.check()
	if isOverlay(dir) {
		errs = append(errs, r.checkDeployable()...)
	}
	return errs
}

func TestKustomizations(t *testing.T) {
	for _, dir := range kustomizations(t) {
		t.Run(dir, func(t *testing.T) {
			for _, p := range renderDir(t, dir).problems(dir) {
				t.Error(p)
			}
		})
	}
}

// check returns every problem found in r; none means the manifests keep the
// properties bindsync relies on (one scheduler, resumable retries, a locked
// down non-root pod, a config file that is where the args say, no
// credential in any manifest).
func (r *rendered) check() []error {
	var errs []error
	if n := len(r.cronJobs) + len(r.deployments); n != 1 {
		errs = append(errs, fmt.Errorf("got %d CronJobs and %d Deployments, want exactly one of them: two would be two schedulers", len(r.cronJobs), len(r.deployments)))
	}
	for _, name := range slices.Sorted(maps.Keys(r.secrets)) {
		if s := r.secrets[name]; len(s.Data)+len(s.StringData) > 0 {
			errs = append(errs, fmt.Errorf("Secret %s holds %d keys: no manifest may carry a credential, since applying it would overwrite the real one; create the Secret with kubectl create secret (deploy/README.md, \"Credentials\")", name, len(s.Data)+len(s.StringData)))
		}
	}
	for _, o := range r.objects {
		if o.labels[nameLabel] != nameValue {
			errs = append(errs, fmt.Errorf("%s has no label %s=%s: `kubectl apply -l` of the switch commands in deploy/README.md would skip it, and --prune would not delete it", o, nameLabel, nameValue))
		}
	}
	for _, cj := range r.cronJobs {
		errs = append(errs, prefix("CronJob "+cj.Name, r.checkCronJob(cj))...)
	}
	for _, d := range r.deployments {
		errs = append(errs, prefix("Deployment "+d.Name, r.checkDeployment(d))...)
	}
	return errs
}

func (r *rendered) checkCronJob(cj batchv1.CronJob) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	s := cj.Spec
	if s.ConcurrencyPolicy != batchv1.ForbidConcurrent {
		bad("concurrencyPolicy %q, want Forbid: two runs of one snapshot must not write at once", s.ConcurrencyPolicy)
	}
	if s.TimeZone == nil || *s.TimeZone == "" {
		bad("timeZone not set: the schedule would follow the controller's local time")
	}
	if s.StartingDeadlineSeconds == nil || *s.StartingDeadlineSeconds <= 0 {
		bad("startingDeadlineSeconds not set")
	}
	if s.SuccessfulJobsHistoryLimit == nil || s.FailedJobsHistoryLimit == nil {
		bad("successfulJobsHistoryLimit and failedJobsHistoryLimit must both be set")
	}
	job := s.JobTemplate.Spec
	if job.BackoffLimit == nil || *job.BackoffLimit < 1 {
		bad("backoffLimit %s, want at least 1: a failed run is resumed by the next pod", ptrString(job.BackoffLimit))
	}
	if job.ActiveDeadlineSeconds == nil || *job.ActiveDeadlineSeconds <= 0 {
		bad("activeDeadlineSeconds not set: a stuck run would block every later night")
	}
	if !failsJobOnExitCode(job.PodFailurePolicy, 2) {
		bad("podFailurePolicy does not fail the Job on exit code 2 (bad usage or config): retrying cannot help")
	}
	pod := job.Template.Spec
	if pod.RestartPolicy != corev1.RestartPolicyNever {
		bad("restartPolicy %q, want Never so that each retry is a new pod counted by backoffLimit", pod.RestartPolicy)
	}
	return append(errs, r.checkPod(pod, "run")...)
}

func (r *rendered) checkDeployment(d appsv1.Deployment) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
		bad("replicas %s, want 1: each replica would be a scheduler", ptrString(d.Spec.Replicas))
	}
	if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		bad("strategy %q, want Recreate so that old and new pods never run at once", d.Spec.Strategy.Type)
	}
	pod := d.Spec.Template
	if d.Spec.Selector == nil || !selects(d.Spec.Selector.MatchLabels, pod.Labels) {
		bad("selector does not match the pod template labels %v", pod.Labels)
	}
	errs = append(errs, r.checkPod(pod.Spec, "serve")...)

	for _, c := range pod.Spec.Containers {
		port := namedPort(c, "http")
		if port == 0 {
			bad("container %s: no port named http", c.Name)
			continue
		}
		for _, p := range []struct {
			name, path string
			probe      *corev1.Probe
		}{
			{"readinessProbe", "/readyz", c.ReadinessProbe},
			{"livenessProbe", "/healthz", c.LivenessProbe},
		} {
			if p.probe == nil || p.probe.HTTPGet == nil {
				bad("container %s: %s must be an HTTP GET of %s", c.Name, p.name, p.path)
				continue
			}
			if p.probe.HTTPGet.Path != p.path || resolvePort(c, p.probe.HTTPGet.Port) != port {
				bad("container %s: %s gets %s on port %s, want %s on %d", c.Name, p.name, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path, port)
			}
		}
		if cfg, err := r.configOf(pod.Spec, c); err == nil && listenPort(cfg.listen) != port {
			bad("container %s: config http.listen %q, want port %d, the container's http port", c.Name, cfg.listen, port)
		}
		errs = append(errs, r.checkMetricsService(pod.Labels, c, port)...)
	}
	return errs
}

// checkMetricsService wants one Service that selects the pod, forwards to its
// metrics port and is annotated for Prometheus scraping.
func (r *rendered) checkMetricsService(podLabels map[string]string, c corev1.Container, port int32) []error {
	for _, svc := range r.services {
		if len(svc.Spec.Selector) == 0 || !selects(svc.Spec.Selector, podLabels) {
			continue
		}
		for _, sp := range svc.Spec.Ports {
			if resolvePort(c, sp.TargetPort) != port {
				continue
			}
			a := svc.Annotations
			if a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != strconv.Itoa(int(sp.Port)) || a["prometheus.io/path"] != "/metrics" {
				return []error{fmt.Errorf("Service %s: prometheus.io annotations %v, want scrape \"true\", port %q, path /metrics", svc.Name, a, strconv.Itoa(int(sp.Port)))}
			}
			return nil
		}
	}
	return []error{fmt.Errorf("no Service selects the pod and targets its metrics port %d", port)}
}

// checkPod checks what every bindsync pod needs, whichever workload runs it.
func (r *rendered) checkPod(pod corev1.PodSpec, subcommand string) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if _, ok := r.serviceAccounts[pod.ServiceAccountName]; pod.ServiceAccountName == "" || !ok {
		bad("serviceAccountName %q is not a rendered ServiceAccount", pod.ServiceAccountName)
	}
	if g := pod.TerminationGracePeriodSeconds; g == nil || *g < 30 {
		bad("terminationGracePeriodSeconds %s, want at least 30 so a run can save its checkpoint on SIGTERM", ptrString(g))
	}
	if a := pod.AutomountServiceAccountToken; a == nil || *a {
		bad("automountServiceAccountToken %s, want false: bindsync never calls the Kubernetes API, and Workload Identity does not need the token", ptrString(a))
	}
	if len(pod.Containers) == 0 {
		bad("no containers")
	}
	for _, c := range pod.Containers {
		errs = append(errs, prefix("container "+c.Name, r.checkContainer(pod, c, subcommand))...)
	}
	return errs
}

func (r *rendered) checkContainer(pod corev1.PodSpec, c corev1.Container, subcommand string) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if repo, tag := splitImage(c.Image); path.Base(repo) != imageName || tag == "" {
		bad("image %q, want a tagged %s image", c.Image, imageName)
	}
	if len(c.Args) == 0 || c.Args[0] != subcommand {
		bad("args %q, want the %s subcommand", c.Args, subcommand)
	}
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, lim := c.Resources.Requests[res], c.Resources.Limits[res]
		if req.IsZero() || lim.IsZero() {
			bad("resources: %s request and limit must both be set", res)
		} else if req.Cmp(lim) > 0 {
			bad("resources: %s request %s above limit %s", res, req.String(), lim.String())
		}
	}
	if err := checkGoMemLimit(c); err != nil {
		errs = append(errs, err)
	}

	sc := c.SecurityContext
	psc := pod.SecurityContext
	if sc == nil {
		sc = &corev1.SecurityContext{}
	}
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if !isTrue(sc.RunAsNonRoot) && !isTrue(psc.RunAsNonRoot) {
		bad("runAsNonRoot not set")
	}
	if uid := firstSet(sc.RunAsUser, psc.RunAsUser); uid == nil || *uid != nonRootUID {
		bad("runAsUser %s, want %d (the image's nonroot user)", ptrString(uid), nonRootUID)
	}
	if !isTrue(sc.ReadOnlyRootFilesystem) {
		bad("readOnlyRootFilesystem not set")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		bad("allowPrivilegeEscalation must be false")
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		bad("capabilities must drop ALL")
	}
	if sp := firstSet(sc.SeccompProfile, psc.SeccompProfile); sp == nil || sp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		bad("seccompProfile must be RuntimeDefault")
	}
	if !writable(pod, c, "/tmp") {
		bad("/tmp is not on a writable volume; the root filesystem is read-only")
	}

	cfg, err := r.configOf(pod, c)
	if err != nil {
		return append(errs, err)
	}
	for _, dir := range cfg.localDirs() {
		if !writable(pod, c, dir) {
			bad("config directory %s is not on a writable volume (emptyDir or a rendered PersistentVolumeClaim)", dir)
			continue
		}
		if _, v, _ := mountOf(pod, c, dir); v.PersistentVolumeClaim != nil {
			if _, ok := r.claims[v.PersistentVolumeClaim.ClaimName]; !ok {
				bad("PersistentVolumeClaim %q is not rendered", v.PersistentVolumeClaim.ClaimName)
			}
		}
	}
	if cfg.usesGoogleCloud() {
		if sa := r.serviceAccounts[pod.ServiceAccountName]; sa.Annotations["iam.gke.io/gcp-service-account"] == "" {
			bad("config uses Google Cloud but ServiceAccount %q has no iam.gke.io/gcp-service-account annotation", pod.ServiceAccountName)
		}
	}
	errs = append(errs, r.checkEnv(c, cfg.vars)...)
	return errs
}

// checkEnv wants every ${VAR} of the config to be set in the container. A
// variable from an envFrom Secret that is not rendered (it comes from a
// secret manager) is taken on trust.
func (r *rendered) checkEnv(c corev1.Container, vars []string) []error {
	provided := map[string]bool{}
	external := false
	for _, e := range c.Env {
		provided[e.Name] = true
	}
	for _, from := range c.EnvFrom {
		if from.SecretRef == nil {
			continue
		}
		s, ok := r.secrets[from.SecretRef.Name]
		if !ok {
			external = true
			continue
		}
		for k := range s.StringData {
			provided[from.Prefix+k] = true
		}
		for k := range s.Data {
			provided[from.Prefix+k] = true
		}
	}
	var errs []error
	for _, v := range vars {
		if !provided[v] && !external {
			errs = append(errs, fmt.Errorf("config uses ${%s}, which no env entry or rendered Secret provides", v))
		}
	}
	return errs
}

// GOMEMLIMIT is wanted between these fractions of limits.memory: about 90%,
// leaving room for the memory the Go runtime does not manage.
const minMemLimitRatio, maxMemLimitRatio = 0.85, 0.95

// checkGoMemLimit wants GOMEMLIMIT set, as a value, to about 90% of the
// container's memory limit. A resourceFieldRef can only give the limit
// itself, which leaves the runtime no room before the OOM killer.
func checkGoMemLimit(c corev1.Container) error {
	i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "GOMEMLIMIT" })
	if i < 0 || c.Env[i].ValueFrom != nil {
		return errors.New("GOMEMLIMIT must be set to a value of about 90% of limits.memory (a resourceFieldRef gives the whole limit)")
	}
	v := c.Env[i].Value
	n, err := parseByteCount(v)
	if err != nil {
		return fmt.Errorf("GOMEMLIMIT %q: %w", v, err)
	}
	limit := c.Resources.Limits[corev1.ResourceMemory]
	if limit.IsZero() {
		return nil // reported with the resources
	}
	ratio := float64(n) / float64(limit.Value())
	if ratio < minMemLimitRatio || ratio > maxMemLimitRatio {
		return fmt.Errorf("GOMEMLIMIT %s is %.0f%% of limits.memory %s, want about 90%% (%.0f%% to %.0f%%): set it with the limit", v, 100*ratio, limit.String(), 100*minMemLimitRatio, 100*maxMemLimitRatio)
	}
	return nil
}

// parseByteCount parses a GOMEMLIMIT value as the Go runtime does: a
// non-negative integer with an optional unit B, KiB, MiB, GiB or TiB.
func parseByteCount(s string) (int64, error) {
	units := []struct {
		suffix string
		shift  uint
	}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}}
	num, shift := s, uint(0)
	for _, u := range units {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			num, shift = rest, u.shift
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || num == "" || num[0] == '+' {
		return 0, errors.New("want a byte count such as 921MiB (units B, KiB, MiB, GiB, TiB)")
	}
	if n > math.MaxInt64>>shift {
		return 0, errors.New("byte count out of range")
	}
	return n << shift, nil
}

// Placeholders of the base that every overlay must replace.
const (
	placeholderBucket  = "gs://my-bucket/"
	placeholderProject = "my-project"
	placeholderGSA     = "PROJECT_ID"
)

// checkDeployable returns the problems of an overlay, which an operator
// applies as it is: objects in one namespace, no placeholder of the base
// left, and for Google Cloud a registry image and the Workload Identity
// names of deploy/README.md. Each problem says what to set.
func (r *rendered) checkDeployable() []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	namespaces := map[string]bool{}
	for _, o := range r.objects {
		namespaces[o.namespace] = true
	}
	if len(namespaces) != 1 || namespaces[""] {
		bad("objects in namespaces %q, want all in one, set by the overlay's namespace: field (kubectl apply --prune works in one namespace)", slices.Sorted(maps.Keys(namespaces)))
	}
	for _, name := range slices.Sorted(maps.Keys(r.serviceAccounts)) {
		if gsa := r.serviceAccounts[name].Annotations["iam.gke.io/gcp-service-account"]; strings.Contains(gsa, placeholderGSA) {
			bad("ServiceAccount %s: iam.gke.io/gcp-service-account %q still holds the %s placeholder: set your Google service account in the overlay (a serviceaccount.yaml patch), or remove the annotation without Google Cloud", name, gsa, placeholderGSA)
		}
	}
	for _, p := range r.pods() {
		for _, c := range p.spec.Containers {
			cfg, err := r.configOf(p.spec, c)
			if err != nil {
				continue // reported by check
			}
			what := p.what + " container " + c.Name
			if strings.HasPrefix(cfg.Staging, placeholderBucket) {
				bad("%s: config staging %q is the base's example bucket: set staging in the overlay's config.yaml to your gs:// bucket (or a directory on a volume)", what, cfg.Staging)
			}
			if bq := cfg.Warehouse.BigQuery; bq != nil && bq.Project == placeholderProject {
				bad("%s: config warehouse.bigquery.project is the base's example %q: set your Google Cloud project in the overlay's config.yaml", what, placeholderProject)
			}
			if !cfg.usesGoogleCloud() {
				continue
			}
			// A cluster on Google Cloud pulls from a registry; bindsync:dev
			// exists only where it was built (or loaded with kind).
			if repo, tag := splitImage(c.Image); !strings.Contains(repo, "/") || tag == "" || tag == "dev" || tag == "latest" {
				bad("%s: image %q, want a registry image with a release tag: set it in the overlay's kustomization.yaml (kustomize edit set image bindsync=REGISTRY/bindsync:TAG)", what, c.Image)
			}
			if ns := p.namespace; ns != workloadIdentityNamespace || p.spec.ServiceAccountName != serviceAccountName {
				bad("%s: runs as %s/%s, want %s/%s, the Workload Identity member that deploy/README.md grants roles/iam.workloadIdentityUser", what, ns, p.spec.ServiceAccountName, workloadIdentityNamespace, serviceAccountName)
			}
		}
	}
	return errs
}

// podTemplate is the pod template of one workload.
type podTemplate struct {
	what, namespace string
	spec            corev1.PodSpec
}

// pods returns the pod template of every CronJob and Deployment.
func (r *rendered) pods() []podTemplate {
	var out []podTemplate
	for _, cj := range r.cronJobs {
		out = append(out, podTemplate{"CronJob " + cj.Name, cj.Namespace, cj.Spec.JobTemplate.Spec.Template.Spec})
	}
	for _, d := range r.deployments {
		out = append(out, podTemplate{"Deployment " + d.Name, d.Namespace, d.Spec.Template.Spec})
	}
	return out
}

// configFile is the part of bindsync's config file the manifests depend on.
// It is parsed here rather than with bindsync's config package so that this
// test only checks what the manifests promise.
type configFile struct {
	Staging   string `yaml:"staging"`
	Warehouse struct {
		Local *struct {
			Path string `yaml:"path"`
		} `yaml:"local"`
		BigQuery *struct {
			Project string `yaml:"project"`
		} `yaml:"bigquery"`
	} `yaml:"warehouse"`

	// listen is http.listen, its default when the file does not set it.
	listen string
	// vars are the ${VAR} names used in values, in order of appearance.
	vars []string
}

// requiredKeys must be at the top of every config file; knownKeys are all
// the top-level keys bindsync reads, so a misspelled one is caught here too.
var (
	requiredKeys = []string{"twilio", "services", "staging", "warehouse"}
	knownKeys    = []string{"twilio", "services", "staging", "warehouse", "export", "schedule", "http", "metrics", "log"}
)

var varRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// parseConfig parses a bindsync config file far enough to check its
// top-level keys and the values the manifests depend on.
func parseConfig(data []byte) (*configFile, error) {
	var top map[string]yaml.Node
	if err := yaml.Unmarshal(data, &top); err != nil {
		return nil, fmt.Errorf("parse config: %w", err)
	}
	var errs []error
	for _, k := range requiredKeys {
		if _, ok := top[k]; !ok {
			errs = append(errs, fmt.Errorf("config: missing top-level key %q", k))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(top)) {
		if !slices.Contains(knownKeys, k) {
			errs = append(errs, fmt.Errorf("config: unknown top-level key %q (known: %s)", k, strings.Join(knownKeys, ", ")))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	var cfg configFile
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("parse config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parse config: %w", err)
	}
	cfg.vars = scalarVars(&doc)
	// Then the real parser, strict and validating, with stand-ins for the
	// secrets the pod's environment provides.
	parsed, err := config.Parse(data, standIn)
	if err != nil {
		return nil, err
	}
	cfg.listen = parsed.HTTP.Listen
	return &cfg, nil
}

// standIn gives a well-formed value for any environment variable a config
// refers to.
func standIn(name string) (string, bool) {
	switch {
	case strings.HasSuffix(name, "ACCOUNT_SID"):
		return "AC" + strings.Repeat("0", 32), true
	case strings.HasSuffix(name, "API_KEY_SID"):
		return "SK" + strings.Repeat("0", 32), true
	default:
		return "stand-in", true
	}
}

// scalarVars returns the ${VAR} names in the scalar values under n; comments
// are not values, so an example in a comment does not count.
func scalarVars(n *yaml.Node) []string {
	var vars []string
	if n.Kind == yaml.ScalarNode {
		for _, m := range varRef.FindAllStringSubmatch(n.Value, -1) {
			vars = append(vars, m[1])
		}
	}
	for _, child := range n.Content {
		vars = append(vars, scalarVars(child)...)
	}
	return vars
}

// localDirs are the directories on the pod's filesystem that bindsync writes.
func (c *configFile) localDirs() []string {
	var dirs []string
	if c.Staging != "" && !strings.HasPrefix(c.Staging, "gs://") {
		dirs = append(dirs, c.Staging)
	}
	if c.Warehouse.Local != nil {
		dirs = append(dirs, c.Warehouse.Local.Path)
	}
	return dirs
}

// usesGoogleCloud reports whether the config needs Google credentials.
func (c *configFile) usesGoogleCloud() bool {
	return strings.HasPrefix(c.Staging, "gs://") || c.Warehouse.BigQuery != nil
}

// configOf finds the file named by the container's --config flag in the
// ConfigMap mounted at its directory, and parses it.
func (r *rendered) configOf(pod corev1.PodSpec, c corev1.Container) (*configFile, error) {
	i := slices.Index(c.Args, "--config")
	if i < 0 || i+1 >= len(c.Args) {
		return nil, fmt.Errorf("args %q have no --config FILE", c.Args)
	}
	file := c.Args[i+1]
	_, v, ok := mountOf(pod, c, file)
	if !ok || v.ConfigMap == nil {
		return nil, fmt.Errorf("--config %s is not in a mounted ConfigMap", file)
	}
	cm, ok := r.configMaps[v.ConfigMap.Name]
	if !ok {
		return nil, fmt.Errorf("--config %s: ConfigMap %q is not rendered", file, v.ConfigMap.Name)
	}
	key := path.Base(file)
	data, ok := cm.Data[key]
	if !ok {
		return nil, fmt.Errorf("--config %s: ConfigMap %q has no key %q", file, cm.Name, key)
	}
	cfg, err := parseConfig([]byte(data))
	if err != nil {
		return nil, fmt.Errorf("ConfigMap %q key %q: %w", cm.Name, key, err)
	}
	return cfg, nil
}

// mountOf returns the mount and volume holding file in container c: the
// mount at the longest path that contains file. ok is false when no mount
// does.
func mountOf(pod corev1.PodSpec, c corev1.Container, file string) (m corev1.VolumeMount, v corev1.Volume, ok bool) {
	for _, cm := range c.VolumeMounts {
		under := file == cm.MountPath || strings.HasPrefix(file, strings.TrimSuffix(cm.MountPath, "/")+"/")
		if under && len(cm.MountPath) > len(m.MountPath) {
			m = cm
		}
	}
	for _, pv := range pod.Volumes {
		if m.Name != "" && pv.Name == m.Name {
			return m, pv, true
		}
	}
	return corev1.VolumeMount{}, corev1.Volume{}, false
}

// writable reports whether dir is on a writable emptyDir or claim.
func writable(pod corev1.PodSpec, c corev1.Container, dir string) bool {
	m, v, ok := mountOf(pod, c, dir)
	if !ok || m.ReadOnly {
		return false
	}
	return v.EmptyDir != nil || (v.PersistentVolumeClaim != nil && !v.PersistentVolumeClaim.ReadOnly)
}

// failsJobOnExitCode reports whether policy fails the whole Job when the
// bindsync container exits with code.
func failsJobOnExitCode(policy *batchv1.PodFailurePolicy, code int32) bool {
	if policy == nil {
		return false
	}
	for _, rule := range policy.Rules {
		req := rule.OnExitCodes
		if rule.Action != batchv1.PodFailurePolicyActionFailJob || req == nil || req.Operator != batchv1.PodFailurePolicyOnExitCodesOpIn {
			continue
		}
		if (req.ContainerName == nil || *req.ContainerName == containerName) && slices.Contains(req.Values, code) {
			return true
		}
	}
	return false
}

// splitImage splits an image reference into repository and tag (or digest).
func splitImage(image string) (repo, tag string) {
	if i := strings.Index(image, "@"); i >= 0 {
		return image[:i], image[i+1:]
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		return image[:i], image[i+1:]
	}
	return image, ""
}

// namedPort returns the number of c's container port called name, or 0.
func namedPort(c corev1.Container, name string) int32 {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

// resolvePort turns a port given by number or by name into a number.
func resolvePort(c corev1.Container, p intstr.IntOrString) int32 {
	if p.Type == intstr.String {
		return namedPort(c, p.StrVal)
	}
	return p.IntVal
}

// listenPort is the port of a listen address such as ":9090", or 0.
func listenPort(addr string) int32 {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, err := strconv.ParseInt(port, 10, 32)
	if err != nil {
		return 0
	}
	return int32(n)
}

// selects reports whether every selector label is among labels.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// prefix names the object each problem was found in.
func prefix(what string, errs []error) []error {
	for i, err := range errs {
		errs[i] = fmt.Errorf("%s: %w", what, err)
	}
	return errs
}

func isTrue(b *bool) bool { return b != nil && *b }

// firstSet returns the first non-nil pointer: a container setting wins over
// the pod's.
func firstSet[T any](ps ...*T) *T {
	for _, p := range ps {
		if p != nil {
			return p
		}
	}
	return nil
}

// ptrString formats an optional value for a problem message.
func ptrString[T any](p *T) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}

// TestExampleConfigs checks the example configs the way the ConfigMaps are
// checked: parseable, with every required and no unknown top-level key.
func TestExampleConfigs(t *testing.T) {
	files, err := filepath.Glob("examples/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no examples/*.yaml")
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := parseConfig(data)
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.vars) == 0 {
				t.Error("no ${VAR} references: Twilio credentials must come from the environment, not the file")
			}
		})
	}
}

// TestStrictDecodingCatchesTypos proves that render rejects what a lenient
// decoder would let through to the cluster.
func TestStrictDecodingCatchesTypos(t *testing.T) {
	const cronJob = `apiVersion: batch/v1
kind: CronJob
metadata:
  name: bindsync
spec:
  schedule: "0 2 * * *"
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: bindsync
              image: bindsync:dev
`
	tests := []struct {
		name    string
		old     string // replaced by new in cronJob
		new     string
		wantErr string // "" means render must succeed
	}{
		{name: "valid", wantErr: ""},
		{name: "misspelled field", old: "concurrencyPolicy", new: "concurencyPolicy", wantErr: `unknown field "spec.concurencyPolicy"`},
		{name: "field in wrong case", old: "concurrencyPolicy", new: "ConcurrencyPolicy", wantErr: `unknown field "spec.ConcurrencyPolicy"`},
		{name: "misspelled nested field", old: "restartPolicy", new: "restartPolcy", wantErr: `unknown field "spec.jobTemplate.spec.template.spec.restartPolcy"`},
		{name: "value of wrong type", old: `schedule: "0 2 * * *"`, new: "schedule: [0, 2]", wantErr: "spec.schedule"},
		{name: "unknown kind", old: "kind: CronJob", new: "kind: CronJobs", wantErr: `unsupported kind "CronJobs"`},
		{name: "old apiVersion", old: "batch/v1", new: "batch/v1beta1", wantErr: `unsupported kind "CronJob" (apiVersion "batch/v1beta1")`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fsys := filesys.MakeFsInMemory()
			files := map[string]string{
				"/app/kustomization.yaml": "resources:\n  - cronjob.yaml\n",
				"/app/cronjob.yaml":       strings.Replace(cronJob, tt.old, tt.new, 1),
			}
			for name, content := range files {
				if err := fsys.WriteFile(name, []byte(content)); err != nil {
					t.Fatal(err)
				}
			}
			r, err := render(fsys, "/app")
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("render: %v", err)
				}
				if len(r.cronJobs) != 1 || r.cronJobs[0].Spec.ConcurrencyPolicy != batchv1.ForbidConcurrent {
					t.Fatalf("decoded %+v, want one CronJob with concurrencyPolicy Forbid", r.cronJobs)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("render error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestChecksCatchUnsafeManifests breaks one property at a time in a rendered
// kustomization and wants check to name it, so that TestKustomizations
// passing means something.
func TestChecksCatchUnsafeManifests(t *testing.T) {
	cronPod := func(r *rendered) *corev1.PodSpec { return &r.cronJobs[0].Spec.JobTemplate.Spec.Template.Spec }
	deployPod := func(r *rendered) *corev1.PodSpec { return &r.deployments[0].Spec.Template.Spec }
	editConfig := func(old, new string) func(*rendered) {
		return func(r *rendered) {
			for _, cm := range r.configMaps {
				cm.Data["config.yaml"] = strings.Replace(cm.Data["config.yaml"], old, new, 1)
			}
		}
	}
	const base, production, serve = "kustomize/base", "kustomize/overlays/production", "kustomize/overlays/serve"
	setEnv := func(r *rendered, e corev1.EnvVar) {
		c := &cronPod(r).Containers[0]
		c.Env = append(slices.DeleteFunc(c.Env, func(x corev1.EnvVar) bool { return x.Name == e.Name }), e)
	}
	addSecret := func(data map[string]string) func(*rendered) {
		return func(r *rendered) { r.secrets["bindsync-twilio"] = corev1.Secret{StringData: data} }
	}
	tests := []struct {
		name    string
		dir     string
		break_  func(*rendered)
		wantErr string // "" means no problem at all
	}{
		{"unchanged base", base, func(*rendered) {}, ""},
		{"unchanged production", production, func(*rendered) {}, ""},
		{"unchanged serve", serve, func(*rendered) {}, ""},
		{"concurrent runs allowed", base, func(r *rendered) { r.cronJobs[0].Spec.ConcurrencyPolicy = batchv1.AllowConcurrent }, "concurrencyPolicy"},
		{"no time zone", base, func(r *rendered) { r.cronJobs[0].Spec.TimeZone = nil }, "timeZone"},
		{"no starting deadline", base, func(r *rendered) { r.cronJobs[0].Spec.StartingDeadlineSeconds = nil }, "startingDeadlineSeconds"},
		{"no retries", base, func(r *rendered) { r.cronJobs[0].Spec.JobTemplate.Spec.BackoffLimit = new(int32(0)) }, "backoffLimit 0"},
		{"no deadline", base, func(r *rendered) { r.cronJobs[0].Spec.JobTemplate.Spec.ActiveDeadlineSeconds = nil }, "activeDeadlineSeconds"},
		{"config errors retried", base, func(r *rendered) { r.cronJobs[0].Spec.JobTemplate.Spec.PodFailurePolicy = nil }, "exit code 2"},
		{"pod restarted in place", base, func(r *rendered) { cronPod(r).RestartPolicy = corev1.RestartPolicyOnFailure }, "restartPolicy"},
		{"short grace period", base, func(r *rendered) { cronPod(r).TerminationGracePeriodSeconds = new(int64(5)) }, "terminationGracePeriodSeconds 5"},
		{"missing service account", base, func(r *rendered) { cronPod(r).ServiceAccountName = "default" }, `serviceAccountName "default"`},
		{"writable root", base, func(r *rendered) { cronPod(r).Containers[0].SecurityContext.ReadOnlyRootFilesystem = nil }, "readOnlyRootFilesystem"},
		{"root user", base, func(r *rendered) { cronPod(r).Containers[0].SecurityContext.RunAsUser = new(int64(0)) }, "runAsUser 0"},
		{"privilege escalation", base, func(r *rendered) { cronPod(r).Containers[0].SecurityContext.AllowPrivilegeEscalation = new(true) }, "allowPrivilegeEscalation"},
		{"capabilities kept", base, func(r *rendered) { cronPod(r).Containers[0].SecurityContext.Capabilities = nil }, "drop ALL"},
		{"no seccomp profile", base, func(r *rendered) { cronPod(r).SecurityContext.SeccompProfile = nil }, "seccompProfile"},
		{"no memory limit", base, func(r *rendered) { delete(cronPod(r).Containers[0].Resources.Limits, corev1.ResourceMemory) }, "memory request and limit"},
		{"other image", base, func(r *rendered) { cronPod(r).Containers[0].Image = "nginx:1.27" }, `image "nginx:1.27"`},
		{"untagged image", base, func(r *rendered) { cronPod(r).Containers[0].Image = "bindsync" }, `image "bindsync"`},
		{"wrong subcommand", base, func(r *rendered) { cronPod(r).Containers[0].Args[0] = "serve" }, "want the run subcommand"},
		{"no /tmp volume", base, func(r *rendered) { cronPod(r).Containers[0].VolumeMounts = cronPod(r).Containers[0].VolumeMounts[:1] }, "/tmp"},
		{"config elsewhere", base, func(r *rendered) { cronPod(r).Containers[0].Args[2] = "/etc/bindsync/bindsync.yaml" }, `no key "bindsync.yaml"`},
		{"config without staging", base, editConfig("staging:", "stagin:"), `missing top-level key "staging"`},
		{"local staging on the root filesystem", base, editConfig("gs://my-bucket/bindsync", "/var/lib/bindsync/staging"), "/var/lib/bindsync/staging is not on a writable volume"},
		{"example Secret rendered", base, addSecret(map[string]string{"TWILIO_ACCOUNT_SID": "AC0", "TWILIO_AUTH_TOKEN": "fake"}), "Secret bindsync-twilio holds 2 keys"},
		{"rendered Secret lacks a key", base, addSecret(map[string]string{"TWILIO_ACCOUNT_SID": "AC0", "TWILIO_TOKEN": "fake"}), "${TWILIO_AUTH_TOKEN}"},
		{"token mounted", base, func(r *rendered) { cronPod(r).AutomountServiceAccountToken = nil }, "automountServiceAccountToken unset"},
		{"GOMEMLIMIT at the limit", base, func(r *rendered) { setEnv(r, corev1.EnvVar{Name: "GOMEMLIMIT", Value: "1GiB"}) }, "GOMEMLIMIT 1GiB is 100% of limits.memory 1Gi"},
		{"GOMEMLIMIT far below the limit", base, func(r *rendered) { setEnv(r, corev1.EnvVar{Name: "GOMEMLIMIT", Value: "512MiB"}) }, "is 50% of limits.memory"},
		{"GOMEMLIMIT from the limit", base, func(r *rendered) {
			setEnv(r, corev1.EnvVar{Name: "GOMEMLIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory"}}})
		}, "GOMEMLIMIT must be set to a value"},
		{"GOMEMLIMIT unparseable", base, func(r *rendered) { setEnv(r, corev1.EnvVar{Name: "GOMEMLIMIT", Value: "1Gi"}) }, `GOMEMLIMIT "1Gi": want a byte count`},
		{"object without the common label", base, func(r *rendered) { delete(r.objects[0].labels, nameLabel) }, "has no label app.kubernetes.io/name=bindsync"},
		{"example bucket", production, editConfig("gs://acme-data-prod-bindsync/staging", "gs://my-bucket/bindsync"), "the base's example bucket"},
		{"example project", production, editConfig("project: acme-data-prod", "project: my-project"), `warehouse.bigquery.project is the base's example "my-project"`},
		{"PROJECT_ID left", production, func(r *rendered) {
			r.serviceAccounts["bindsync"].Annotations["iam.gke.io/gcp-service-account"] = "bindsync@PROJECT_ID.iam.gserviceaccount.com"
		}, "still holds the PROJECT_ID placeholder"},
		{"dev image on Google Cloud", serve, func(r *rendered) { deployPod(r).Containers[0].Image = "bindsync:dev" }, `image "bindsync:dev", want a registry image`},
		{"another namespace", production, func(r *rendered) {
			r.objects[0].namespace = "default"
			r.cronJobs[0].Namespace = "default"
		}, `objects in namespaces ["bindsync" "default"]`},
		{"no Workload Identity", base, func(r *rendered) { r.serviceAccounts["bindsync"] = corev1.ServiceAccount{} }, "iam.gke.io/gcp-service-account"},
		{"two schedulers", serve, func(r *rendered) { r.cronJobs = append(r.cronJobs, batchv1.CronJob{}) }, "want exactly one"},
		{"two replicas", serve, func(r *rendered) { r.deployments[0].Spec.Replicas = new(int32(2)) }, "replicas 2"},
		{"rolling update", serve, func(r *rendered) { r.deployments[0].Spec.Strategy.Type = appsv1.RollingUpdateDeploymentStrategyType }, "Recreate"},
		{"readiness on /healthz", serve, func(r *rendered) { deployPod(r).Containers[0].ReadinessProbe.HTTPGet.Path = "/healthz" }, "readinessProbe gets /healthz"},
		{"no liveness probe", serve, func(r *rendered) { deployPod(r).Containers[0].LivenessProbe = nil }, "livenessProbe must be"},
		{"listener on another port", serve, editConfig("\nlog:", "\nhttp:\n  listen: \":8080\"\nlog:"), `http.listen ":8080"`},
		{"not scraped", serve, func(r *rendered) { delete(r.services[0].Annotations, "prometheus.io/scrape") }, "prometheus.io annotations"},
		{"service selects nothing", serve, func(r *rendered) { r.services[0].Spec.Selector = map[string]string{"app": "other"} }, "no Service selects the pod"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := renderDir(t, tt.dir)
			tt.break_(r)
			errs := r.problems(tt.dir)
			if tt.wantErr == "" {
				if len(errs) > 0 {
					t.Fatalf("check found %v, want no problem", errs)
				}
				return
			}
			for _, err := range errs {
				if strings.Contains(err.Error(), tt.wantErr) {
					return
				}
			}
			t.Fatalf("check found %v, want a problem containing %q", errs, tt.wantErr)
		})
	}
}

// TestDockerfile checks the final image stage: a static non-root image whose
// default command is the one the CronJob runs.
func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	final := finalStage(string(data))

	r := renderDir(t, "kustomize/base")
	if len(r.cronJobs) != 1 {
		t.Fatalf("base renders %d CronJobs, want 1", len(r.cronJobs))
	}
	cronArgs, err := json.Marshal(r.cronJobs[0].Spec.JobTemplate.Spec.Template.Spec.Containers[0].Args)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		directive string
		want      func(string) bool
		wantDesc  string
	}{
		{"FROM", func(v string) bool {
			return strings.HasPrefix(v, "gcr.io/distroless/static") || v == "scratch"
		}, "distroless/static or scratch"},
		{"USER", func(v string) bool { return strings.HasPrefix(v, strconv.Itoa(nonRootUID)) }, strconv.Itoa(nonRootUID)},
		{"ENTRYPOINT", func(v string) bool { return jsonEqual(v, `["/bindsync"]`) }, `["/bindsync"]`},
		{"CMD", func(v string) bool { return jsonEqual(v, string(cronArgs)) }, string(cronArgs) + " (the base CronJob's args)"},
	}
	for _, tt := range tests {
		t.Run(tt.directive, func(t *testing.T) {
			got, ok := final[tt.directive]
			if !ok {
				t.Fatalf("final stage has no %s", tt.directive)
			}
			if !tt.want(got) {
				t.Errorf("%s %s, want %s", tt.directive, got, tt.wantDesc)
			}
		})
	}
	if !strings.Contains(string(data), "CGO_ENABLED=0") || !strings.Contains(string(data), "./cmd/bindsync") {
		t.Error("the build stage must build ./cmd/bindsync with CGO_ENABLED=0 (a static binary for distroless/static)")
	}
}

// finalStage returns the directives of the last stage of a Dockerfile, the
// last value of each, with line continuations joined.
func finalStage(dockerfile string) map[string]string {
	stage := map[string]string{}
	joined := strings.ReplaceAll(dockerfile, "\\\n", " ")
	for line := range strings.Lines(joined) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		directive, value, _ := strings.Cut(line, " ")
		directive = strings.ToUpper(directive)
		if directive == "FROM" {
			stage = map[string]string{}
		}
		stage[directive] = strings.TrimSpace(value)
	}
	return stage
}

// jsonEqual reports whether two JSON arrays of strings are equal.
func jsonEqual(a, b string) bool {
	var x, y []string
	return json.Unmarshal([]byte(a), &x) == nil && json.Unmarshal([]byte(b), &y) == nil && slices.Equal(x, y)
}
