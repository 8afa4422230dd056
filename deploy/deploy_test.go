package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

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
)

// rendered is the output of one kustomization, every object decoded
// strictly into its Kubernetes API type.
type rendered struct {
	cronJobs        []batchv1.CronJob
	deployments     []appsv1.Deployment
	services        []corev1.Service
	configMaps      map[string]corev1.ConfigMap
	secrets         map[string]corev1.Secret
	serviceAccounts map[string]corev1.ServiceAccount
	claims          map[string]corev1.PersistentVolumeClaim
}

// render runs kustomize on dir of fsys and decodes every resource strictly:
// an unknown or misspelled field (compared case-sensitively, as the API
// server does), a duplicated field or a kind this test does not know is an
// error.
func render(fsys filesys.FileSystem, dir string) (*rendered, error) {
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	r := &rendered{
		configMaps:      map[string]corev1.ConfigMap{},
		secrets:         map[string]corev1.Secret{},
		serviceAccounts: map[string]corev1.ServiceAccount{},
		claims:          map[string]corev1.PersistentVolumeClaim{},
	}
	for _, res := range resMap.Resources() {
		id := res.GetApiVersion() + " " + res.GetKind() + " " + res.GetName()
		data, err := res.MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("marshal %s: %w", id, err)
		}
		if err := r.add(res.GetApiVersion(), res.GetKind(), data); err != nil {
			return nil, fmt.Errorf("decode %s: %w", id, err)
		}
	}
	return r, nil
}

// add decodes one object by its apiVersion and kind and files it in r.
func (r *rendered) add(apiVersion, kind string, data []byte) error {
	switch apiVersion + " " + kind {
	case "batch/v1 CronJob":
		var o batchv1.CronJob
		if err := decodeStrict(data, &o); err != nil {
			return err
		}
		r.cronJobs = append(r.cronJobs, o)
	case "apps/v1 Deployment":
		var o appsv1.Deployment
		if err := decodeStrict(data, &o); err != nil {
			return err
		}
		r.deployments = append(r.deployments, o)
	case "v1 Service":
		var o corev1.Service
		if err := decodeStrict(data, &o); err != nil {
			return err
		}
		r.services = append(r.services, o)
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

func TestKustomizations(t *testing.T) {
	for _, dir := range kustomizations(t) {
		t.Run(dir, func(t *testing.T) {
			r, err := render(filesys.MakeFsOnDisk(), dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range r.check() {
				t.Error(p)
			}
		})
	}
}

// TestProductionOverlay checks what only production promises: a released
// image, its own namespace, and no example Secret that would overwrite the
// credentials coming from the secret manager.
func TestProductionOverlay(t *testing.T) {
	r, err := render(filesys.MakeFsOnDisk(), "kustomize/overlays/production")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.secrets) != 0 {
		t.Errorf("production renders Secrets %v; credentials must come from the secret manager", slices.Sorted(maps.Keys(r.secrets)))
	}
	for _, cj := range r.cronJobs {
		if cj.Namespace != "bindsync" {
			t.Errorf("CronJob %s: namespace %q, want bindsync (the Workload Identity member is bindsync/bindsync)", cj.Name, cj.Namespace)
		}
		for _, c := range cj.Spec.JobTemplate.Spec.Template.Spec.Containers {
			repo, tag := splitImage(c.Image)
			if !strings.Contains(repo, "/") || tag == "" || tag == "dev" || tag == "latest" {
				t.Errorf("container %s: image %q, want a registry image with a release tag", c.Name, c.Image)
			}
		}
	}
	for name, sa := range r.serviceAccounts {
		if gsa := sa.Annotations["iam.gke.io/gcp-service-account"]; strings.Contains(gsa, "PROJECT_ID") {
			t.Errorf("ServiceAccount %s: Workload Identity annotation %q still holds the PROJECT_ID placeholder", name, gsa)
		}
	}
}

// check returns every problem found in r; none means the manifests keep the
// properties bindsync relies on (one scheduler, resumable retries, a locked
// down non-root pod, a config file that is where the args say).
func (r *rendered) check() []error {
	var errs []error
	if n := len(r.cronJobs) + len(r.deployments); n != 1 {
		errs = append(errs, fmt.Errorf("got %d CronJobs and %d Deployments, want exactly one of them: two would be two schedulers", len(r.cronJobs), len(r.deployments)))
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
		if cfg, err := r.configOf(pod.Spec, c); err == nil && listenPort(cfg.HTTP.Listen) != port {
			bad("container %s: config http.listen %q, want port %d, the container's http port", c.Name, cfg.HTTP.Listen, port)
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
	HTTP struct {
		Listen string `yaml:"listen"`
	} `yaml:"http"`

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
	if _, err := config.Parse(data, standIn); err != nil {
		return nil, err
	}
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
	const base, serve = "kustomize/base", "kustomize/overlays/serve"
	tests := []struct {
		name    string
		dir     string
		break_  func(*rendered)
		wantErr string // "" means no problem at all
	}{
		{"unchanged base", base, func(*rendered) {}, ""},
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
		{"secret key renamed", base, func(r *rendered) {
			s := r.secrets["bindsync-twilio"]
			s.StringData["TWILIO_TOKEN"] = s.StringData["TWILIO_AUTH_TOKEN"]
			delete(s.StringData, "TWILIO_AUTH_TOKEN")
		}, "${TWILIO_AUTH_TOKEN}"},
		{"no Workload Identity", base, func(r *rendered) { r.serviceAccounts["bindsync"] = corev1.ServiceAccount{} }, "iam.gke.io/gcp-service-account"},
		{"two schedulers", serve, func(r *rendered) { r.cronJobs = append(r.cronJobs, batchv1.CronJob{}) }, "want exactly one"},
		{"two replicas", serve, func(r *rendered) { r.deployments[0].Spec.Replicas = new(int32(2)) }, "replicas 2"},
		{"rolling update", serve, func(r *rendered) { r.deployments[0].Spec.Strategy.Type = appsv1.RollingUpdateDeploymentStrategyType }, "Recreate"},
		{"readiness on /healthz", serve, func(r *rendered) { deployPod(r).Containers[0].ReadinessProbe.HTTPGet.Path = "/healthz" }, "readinessProbe gets /healthz"},
		{"no liveness probe", serve, func(r *rendered) { deployPod(r).Containers[0].LivenessProbe = nil }, "livenessProbe must be"},
		{"listener on another port", serve, editConfig(`":9090"`, `":8080"`), `http.listen ":8080"`},
		{"not scraped", serve, func(r *rendered) { delete(r.services[0].Annotations, "prometheus.io/scrape") }, "prometheus.io annotations"},
		{"service selects nothing", serve, func(r *rendered) { r.services[0].Spec.Selector = map[string]string{"app": "other"} }, "no Service selects the pod"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := render(filesys.MakeFsOnDisk(), tt.dir)
			if err != nil {
				t.Fatal(err)
			}
			tt.break_(r)
			errs := r.check()
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

	r, err := render(filesys.MakeFsOnDisk(), "kustomize/base")
	if err != nil {
		t.Fatal(err)
	}
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
