package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/bindsync/bindsync/checkpoint"
	"github.com/bindsync/bindsync/metrics"
)

// alertsOverlay is an overlay, made up in memory, that adds the alerts
// component to production as deploy/README.md tells an operator to.
const alertsOverlay = "/kustomize/overlays/with-alerts"

// buildWithAlerts runs kustomize on production with the alerts component.
func buildWithAlerts(t *testing.T) []resource {
	t.Helper()
	fsys := memCopy(t, "kustomize")
	err := fsys.WriteFile(alertsOverlay+"/kustomization.yaml", []byte(`resources:
  - ../production
components:
  - ../../components/alerts
`))
	if err != nil {
		t.Fatal(err)
	}
	res, err := build(fsys, alertsOverlay)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// mustDecode decodes kustomize's output for a test that changes it.
func mustDecode(t *testing.T, res []resource) *rendered {
	t.Helper()
	r, err := decode(res)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// memCopy copies the directory dir on disk into an in-memory file system,
// at /dir, so that a test can add a kustomization beside the real ones
// without writing into the source tree.
func memCopy(t *testing.T, dir string) filesys.FileSystem {
	t.Helper()
	fsys := filesys.MakeFsInMemory()
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return fsys.WriteFile("/"+filepath.ToSlash(p), data)
	})
	if err != nil {
		t.Fatal(err)
	}
	return fsys
}

// exported maps each series name bindsync exports to the values of each of
// its labels: the names a rule may use.
type exported map[string]map[string]map[string]bool

// exportedSeries reads the series that the metrics package registers, by
// gathering them after one run: the last-success and last-run gauges
// appear only once a run has ended.
func exportedSeries(t *testing.T) exported {
	t.Helper()
	m := metrics.New()
	m.RunStarted()
	m.RunFinished(checkpoint.RunSummary{}, nil, time.Second)
	fams, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := exported{}
	add := func(name string, pairs []*dto.LabelPair, extra ...string) {
		if out[name] == nil {
			out[name] = map[string]map[string]bool{}
		}
		set := func(k, v string) {
			if out[name][k] == nil {
				out[name][k] = map[string]bool{}
			}
			out[name][k][v] = true
		}
		for _, p := range pairs {
			set(p.GetName(), p.GetValue())
		}
		for i := 0; i+1 < len(extra); i += 2 {
			set(extra[i], extra[i+1])
		}
	}
	for _, f := range fams {
		name := f.GetName()
		for _, s := range f.GetMetric() {
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM:
				for _, b := range s.GetHistogram().GetBucket() {
					add(name+"_bucket", s.GetLabel(), "le", fmt.Sprint(b.GetUpperBound()))
				}
				add(name+"_bucket", s.GetLabel(), "le", "+Inf")
				add(name+"_sum", s.GetLabel())
				add(name+"_count", s.GetLabel())
			case dto.MetricType_SUMMARY:
				for _, q := range s.GetSummary().GetQuantile() {
					add(name, s.GetLabel(), "quantile", fmt.Sprint(q.GetQuantile()))
				}
				add(name+"_sum", s.GetLabel())
				add(name+"_count", s.GetLabel())
			default:
				add(name, s.GetLabel())
			}
		}
	}
	return out
}

// literalAlternatives returns the alternatives of a regexp made only of
// literals joined by |, or nil for any other regexp.
func literalAlternatives(re string) []string {
	alts := strings.Split(re, "|")
	for _, a := range alts {
		if a == "" || regexp.QuoteMeta(a) != a {
			return nil
		}
	}
	return alts
}

// checkSelector wants the selector to name a series bindsync exports, and
// every label it matches on equality (or on a list of literals) to be a
// label of that series with a value bindsync exports.
func (e exported) checkSelector(vs *parser.VectorSelector) []error {
	name := vs.Name
	for _, m := range vs.LabelMatchers {
		if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
			name = m.Value
		}
	}
	if name == "" {
		return []error{fmt.Errorf("selector %s names no metric", vs)}
	}
	series, ok := e[name]
	if !ok {
		var names []string
		for n := range e {
			if strings.HasPrefix(n, "bindsync_") {
				names = append(names, n)
			}
		}
		slices.Sort(names)
		return []error{fmt.Errorf("metric %s is not exported by bindsync (metrics/metrics.go exports %s)", name, strings.Join(names, ", "))}
	}
	var errs []error
	for _, m := range vs.LabelMatchers {
		if m.Name == labels.MetricName {
			continue
		}
		values, ok := series[m.Name]
		if !ok {
			errs = append(errs, fmt.Errorf("%s has no label %q (labels: %s)", name, m.Name, strings.Join(slices.Sorted(maps.Keys(series)), ", ")))
			continue
		}
		var want []string
		switch m.Type {
		case labels.MatchEqual:
			want = []string{m.Value}
		case labels.MatchRegexp:
			want = literalAlternatives(m.Value)
		}
		for _, v := range want {
			if !values[v] {
				errs = append(errs, fmt.Errorf("%s{%s=%q}: bindsync exports no such value (values: %s)", name, m.Name, v, strings.Join(slices.Sorted(maps.Keys(values)), ", ")))
			}
		}
	}
	return errs
}

// checkExpr parses a PromQL expression and checks every selector in it. It
// also returns the metric names the expression uses.
func (e exported) checkExpr(expr string) (used []string, errs []error) {
	ast, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return nil, []error{fmt.Errorf("parse %q: %w", expr, err)}
	}
	parser.Inspect(ast, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			used = append(used, vs.Name)
			errs = append(errs, e.checkSelector(vs)...)
		}
		return nil
	})
	return used, errs
}

// checkRules validates the groups of a PrometheusRule as Prometheus loads a
// rule file (strictly: an unknown field, a bad duration, expression or
// template is an error), wants every alert to say how bad it is and what to
// do, and checks its expression against what bindsync exports. It returns
// the metric names the rules use.
func (e exported) checkRules(rule monitoringv1.PrometheusRule) (used map[string]bool, errs []error) {
	j, err := json.Marshal(struct {
		Groups []monitoringv1.RuleGroup `json:"groups"`
	}{rule.Spec.Groups})
	if err != nil {
		return nil, []error{err}
	}
	y, err := sigsyaml.JSONToYAML(j)
	if err != nil {
		return nil, []error{err}
	}
	groups, perrs := rulefmt.Parse(y, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	if len(perrs) > 0 {
		return nil, perrs
	}
	used = map[string]bool{}
	for _, g := range groups.Groups {
		if len(g.Rules) == 0 {
			errs = append(errs, fmt.Errorf("group %s has no rules", g.Name))
		}
		for _, r := range g.Rules {
			what := "alert " + r.Alert
			if r.Alert == "" {
				what = "record " + r.Record
			} else {
				if s := r.Labels["severity"]; s != "critical" && s != "warning" {
					errs = append(errs, fmt.Errorf("%s: severity %q, want critical (pages) or warning", what, s))
				}
				for _, a := range []string{"summary", "description"} {
					if strings.TrimSpace(r.Annotations[a]) == "" {
						errs = append(errs, fmt.Errorf("%s: no %s annotation: whoever is paged needs to know what happened and what to do", what, a))
					}
				}
			}
			names, exprErrs := e.checkExpr(r.Expr)
			for _, n := range names {
				used[n] = true
			}
			errs = append(errs, prefix(what, exprErrs)...)
		}
	}
	return used, errs
}

// TestAlerts renders production with the alerts component, decodes the
// PrometheusRule strictly, loads its groups as Prometheus would and checks
// that each expression names series bindsync exports, and that the alerts
// a nightly job needs are there.
func TestAlerts(t *testing.T) {
	r := mustDecode(t, buildWithAlerts(t))
	for _, p := range r.problems(alertsOverlay) {
		t.Errorf("with the alerts component: %v", p)
	}
	if len(r.rules) != 1 {
		t.Fatalf("%d PrometheusRules rendered, want 1", len(r.rules))
	}
	used, errs := exportedSeries(t).checkRules(r.rules[0])
	for _, err := range errs {
		t.Error(err)
	}
	// No success for 26 hours, a failed run, a run far longer than usual,
	// Twilio throttling: each needs its metric.
	for _, m := range []string{
		"bindsync_last_success_timestamp_seconds",
		"bindsync_runs_total",
		"bindsync_run_in_progress",
		"bindsync_twilio_retries_total",
	} {
		if !used[m] {
			t.Errorf("no alert uses %s", m)
		}
	}
}

// TestRuleChecksCatchBadRules breaks one rule of the component at a time
// and wants checkRules to name the problem, so that TestAlerts passing
// means something.
func TestRuleChecksCatchBadRules(t *testing.T) {
	known := exportedSeries(t)
	res := buildWithAlerts(t)
	first := func(pr *monitoringv1.PrometheusRule) *monitoringv1.Rule { return &pr.Spec.Groups[0].Rules[0] }
	setExpr := func(expr string) func(*monitoringv1.PrometheusRule) {
		return func(pr *monitoringv1.PrometheusRule) { first(pr).Expr = intstr.FromString(expr) }
	}
	tests := []struct {
		name    string
		break_  func(*monitoringv1.PrometheusRule)
		wantErr string // "" means no problem at all
	}{
		{"unchanged", func(*monitoringv1.PrometheusRule) {}, ""},
		{"misspelled metric", setExpr(`time() - bindsync_last_sucess_timestamp_seconds > 3600`), "metric bindsync_last_sucess_timestamp_seconds is not exported"},
		{"unknown label value", setExpr(`increase(bindsync_runs_total{status="failure"}[1h]) > 0`), `bindsync_runs_total{status="failure"}: bindsync exports no such value`},
		{"unknown value in a list", setExpr(`increase(bindsync_runs_total{status=~"failed|crashed"}[1h]) > 0`), `{status="crashed"}`},
		{"unknown label", setExpr(`rate(bindsync_twilio_retries_total{code="429"}[5m]) > 0`), `bindsync_twilio_retries_total has no label "code"`},
		{"histogram series", setExpr(`histogram_quantile(0.9, rate(bindsync_run_duration_seconds_bucket[1d])) > 3600`), ""},
		{"not PromQL", setExpr(`bindsync_runs_total{status="failed"`), "unexpected end of input"},
		{"bad template", func(pr *monitoringv1.PrometheusRule) {
			first(pr).Annotations["description"] = "{{ $value | humanizeDurashun }}"
		}, `function "humanizeDurashun" not defined`},
		{"no severity", func(pr *monitoringv1.PrometheusRule) { delete(first(pr).Labels, "severity") }, `severity "", want critical`},
		{"no description", func(pr *monitoringv1.PrometheusRule) { delete(first(pr).Annotations, "description") }, "no description annotation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustDecode(t, res)
			if len(r.rules) != 1 || len(r.rules[0].Spec.Groups) == 0 || len(r.rules[0].Spec.Groups[0].Rules) == 0 {
				t.Fatalf("rendered rules %+v, want one PrometheusRule with rules", r.rules)
			}
			tt.break_(&r.rules[0])
			_, errs := known.checkRules(r.rules[0])
			if tt.wantErr == "" {
				if len(errs) > 0 {
					t.Fatalf("checkRules found %v, want no problem", errs)
				}
				return
			}
			if err := errors.Join(errs...); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("checkRules found %v, want a problem containing %q", errs, tt.wantErr)
			}
		})
	}
}
