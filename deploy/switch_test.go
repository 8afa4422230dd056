package deploy

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// switchCommands are the commands deploy/README.md gives for moving from
// the CronJob to serve and back. A plain `kubectl apply -k` of the other
// overlay leaves the live CronJob (or Deployment) running: only --prune
// deletes it, and only if it carries the label and its kind is allowed.
var switchCommands = []string{
	"kubectl apply -k deploy/kustomize/overlays/serve --prune -l app.kubernetes.io/name=bindsync --prune-allowlist=batch/v1/CronJob --prune-allowlist=apps/v1/Deployment --prune-allowlist=core/v1/Service --prune-allowlist=core/v1/ConfigMap",
	"kubectl apply -k deploy/kustomize/overlays/production --prune -l app.kubernetes.io/name=bindsync --prune-allowlist=batch/v1/CronJob --prune-allowlist=apps/v1/Deployment --prune-allowlist=core/v1/Service --prune-allowlist=core/v1/ConfigMap",
}

// applyCommand is what a switch command asks kubectl to do.
type applyCommand struct {
	dir       string            // the kustomization, relative to deploy/
	selector  map[string]string // -l, equality only
	allowlist []string          // group/version/kind, core for the core group
	prune     bool
}

// parseApply reads the flags of `kubectl apply` that the switch relies on,
// and refuses any other, so that the test and the README cannot drift
// apart silently.
func parseApply(cmd string) (applyCommand, error) {
	var a applyCommand
	args := strings.Fields(cmd)
	if len(args) < 2 || args[0] != "kubectl" || args[1] != "apply" {
		return a, fmt.Errorf("%q is not a kubectl apply", cmd)
	}
	for i := 2; i < len(args); i++ {
		arg := args[i]
		next := func() (string, error) {
			if i+1 >= len(args) {
				return "", fmt.Errorf("%s without a value", arg)
			}
			i++
			return args[i], nil
		}
		switch {
		case arg == "-k":
			v, err := next()
			if err != nil {
				return a, err
			}
			rel, ok := strings.CutPrefix(v, "deploy/")
			if !ok {
				return a, fmt.Errorf("-k %s: want a path from the repository root", v)
			}
			a.dir = rel
		case arg == "-l":
			v, err := next()
			if err != nil {
				return a, err
			}
			a.selector = map[string]string{}
			for _, kv := range strings.Split(v, ",") {
				k, val, ok := strings.Cut(kv, "=")
				if !ok {
					return a, fmt.Errorf("-l %s: only key=value selectors are understood here", v)
				}
				a.selector[k] = val
			}
		case arg == "--prune":
			a.prune = true
		case strings.HasPrefix(arg, "--prune-allowlist="):
			a.allowlist = append(a.allowlist, strings.TrimPrefix(arg, "--prune-allowlist="))
		default:
			return a, fmt.Errorf("flag %s is not understood by this test", arg)
		}
	}
	if a.dir == "" || len(a.selector) == 0 {
		return a, fmt.Errorf("%q: want -k DIR and -l SELECTOR", cmd)
	}
	return a, nil
}

// gvk is an object's group/version/kind as --prune-allowlist spells it.
func gvk(o object) string {
	if !strings.Contains(o.apiVersion, "/") {
		return "core/" + o.apiVersion + "/" + o.kind
	}
	return o.apiVersion + "/" + o.kind
}

// key identifies a live object.
func key(o object) string { return gvk(o) + " " + o.namespace + "/" + o.name }

// simulateApply returns the objects live after `kubectl apply` of a, given
// the objects live before (all applied earlier with kubectl apply), and the
// problems of the command: objects of the new set that -l would skip, and
// any object that --prune would delete although it holds data.
func simulateApply(a applyCommand, live []object, next *rendered) (after []object, problems []error) {
	selected := func(o object) bool {
		for k, v := range a.selector {
			if o.labels[k] != v {
				return false
			}
		}
		return true
	}
	applied := map[string]bool{}
	namespaces := map[string]bool{}
	for _, o := range next.objects {
		if !selected(o) {
			problems = append(problems, fmt.Errorf("%s does not match -l %v: kubectl apply would skip it", o, a.selector))
			continue
		}
		applied[key(o)] = true
		namespaces[o.namespace] = true
		after = append(after, o)
	}
	for _, o := range live {
		if applied[key(o)] {
			continue
		}
		pruned := a.prune && selected(o) && namespaces[o.namespace] && slices.Contains(a.allowlist, gvk(o))
		if pruned && (o.kind == "PersistentVolumeClaim" || o.kind == "Secret") {
			problems = append(problems, fmt.Errorf("--prune would delete %s, which holds data", o))
		}
		if !pruned {
			after = append(after, o)
		}
	}
	return after, problems
}

// TestSwitchingScheduler applies each switch command of deploy/README.md to
// the objects the other overlay left live, and wants exactly one scheduler
// afterwards: the new one.
func TestSwitchingScheduler(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	// Shell line continuations read as one line.
	doc := regexp.MustCompile(`[ \t]*\\\n[ \t]*`).ReplaceAllString(string(readme), " ")
	const production, serve = "kustomize/overlays/production", "kustomize/overlays/serve"
	for _, cmd := range switchCommands {
		a, err := parseApply(cmd)
		if err != nil {
			t.Fatal(err)
		}
		from := production
		if a.dir == production {
			from = serve
		}
		t.Run(from+" to "+a.dir, func(t *testing.T) {
			if !strings.Contains(doc, cmd) {
				t.Errorf("deploy/README.md does not give the command\n%s", cmd)
			}
			before, next := renderDir(t, from), renderDir(t, a.dir)
			after, problems := simulateApply(a, before.objects, next)
			for _, p := range problems {
				t.Error(p)
			}
			var schedulers []string
			for _, o := range after {
				if o.kind == "CronJob" || o.kind == "Deployment" {
					schedulers = append(schedulers, o.String())
				}
			}
			want := next.pods()
			if len(want) != 1 || len(schedulers) != 1 || schedulers[0] != want[0].what {
				t.Errorf("after the switch the cluster runs %v, want only the new %v: two would be two schedulers", schedulers, want)
			}
		})
	}
}

// TestSwitchSimulationCatchesLeftovers proves that the simulation finds the
// failures the switch commands guard against.
func TestSwitchSimulationCatchesLeftovers(t *testing.T) {
	a, err := parseApply(switchCommands[0])
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		change  func(a *applyCommand, live []object) []object
		wantErr string // a problem of simulateApply, or "" for two schedulers
	}{
		{"no --prune", func(a *applyCommand, live []object) []object { a.prune = false; return live }, ""},
		{"CronJob not allowed", func(a *applyCommand, live []object) []object {
			a.allowlist = slices.DeleteFunc(slices.Clone(a.allowlist), func(s string) bool { return s == "batch/v1/CronJob" })
			return live
		}, ""},
		{"CronJob without the label", func(a *applyCommand, live []object) []object {
			for i := range live {
				if live[i].kind == "CronJob" {
					live[i].labels = nil
				}
			}
			return live
		}, ""},
		{"claim pruned", func(a *applyCommand, live []object) []object {
			a.allowlist = append(slices.Clone(a.allowlist), "core/v1/PersistentVolumeClaim")
			return append(live, object{apiVersion: "v1", kind: "PersistentVolumeClaim", namespace: "bindsync", name: "bindsync-data", labels: map[string]string{nameLabel: nameValue}})
		}, "--prune would delete PersistentVolumeClaim bindsync-data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := a
			live := tt.change(&a, renderDir(t, "kustomize/overlays/production").objects)
			after, problems := simulateApply(a, live, renderDir(t, "kustomize/overlays/serve"))
			if tt.wantErr != "" {
				for _, p := range problems {
					if strings.Contains(p.Error(), tt.wantErr) {
						return
					}
				}
				t.Fatalf("problems %v, want one containing %q", problems, tt.wantErr)
			}
			n := 0
			for _, o := range after {
				if o.kind == "CronJob" || o.kind == "Deployment" {
					n++
				}
			}
			if n != 2 {
				t.Errorf("%d schedulers after the switch, want the 2 this mistake leaves", n)
			}
		})
	}
}
