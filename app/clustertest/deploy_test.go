package clustertest

import (
	"encoding/json"
	"io/fs"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// deployDir holds the deployment material, relative to this package.
const deployDir = "../../docs/deploy"

// readDeployFile returns the content of a file under docs/deploy.
func readDeployFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, name))
	if err != nil {
		t.Fatalf("read docs/deploy/%s: %v", name, err)
	}
	return string(b)
}

// manifests parses a YAML file under docs/deploy and returns its documents
// by kind; each kind may occur once.
func manifests(t *testing.T, name string) map[string]map[string]any {
	t.Helper()
	docs, err := parseYAML(readDeployFile(t, name))
	if err != nil {
		t.Fatalf("parse docs/deploy/%s: %v", name, err)
	}
	byKind := map[string]map[string]any{}
	for i, d := range docs {
		m, ok := d.(map[string]any)
		if !ok {
			t.Fatalf("docs/deploy/%s: document %d is not a mapping", name, i+1)
		}
		kind, _ := m["kind"].(string)
		if kind == "" {
			t.Fatalf("docs/deploy/%s: document %d has no kind", name, i+1)
		}
		if _, dup := byKind[kind]; dup {
			t.Fatalf("docs/deploy/%s: two documents of kind %s", name, kind)
		}
		byKind[kind] = m
	}
	return byKind
}

// field returns the string at path in doc, failing the test when it is
// missing or not a string.
func field(t *testing.T, doc any, path ...string) string {
	t.Helper()
	v, err := lookup(doc, path...)
	if err != nil {
		t.Fatal(err)
	}
	s, ok := v.(string)
	if !ok {
		t.Fatalf("%s is %T, want a string", strings.Join(path, "."), v)
	}
	return s
}

// node returns the value at path in doc, failing the test when it is
// missing.
func node(t *testing.T, doc any, path ...string) any {
	t.Helper()
	v, err := lookup(doc, path...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// codeMetricNames returns the metric names that the Go sources under app
// register: every string literal that starts with controlplane_.
func codeMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	literal := regexp.MustCompile(`"(controlplane_[a-z0-9_]+)"`)
	names := map[string]bool{}
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range literal.FindAllStringSubmatch(string(b), -1) {
			names[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read the Go sources under app: %v", err)
	}
	if len(names) == 0 {
		t.Fatal("found no metric name in the Go sources under app")
	}
	return names
}

var (
	seriesName = regexp.MustCompile(`\bcontrolplane_[a-z0-9_]+`)
	routeLabel = regexp.MustCompile(`route="([^"]+)"`)
)

// checkQueries checks that every metric a PromQL query uses is registered
// in the code and exported by a running replica, and that every route label
// value it matches is one the replica reports.
func checkQueries(t *testing.T, where string, queries []string, code map[string]bool, scrape string) {
	t.Helper()
	if len(queries) == 0 {
		t.Errorf("%s: no queries", where)
	}
	for _, q := range queries {
		names := seriesName.FindAllString(q, -1)
		if len(names) == 0 {
			t.Errorf("%s: query %q uses no controlplane_ metric", where, q)
		}
		for _, name := range names {
			base := name
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if !code[base] && strings.HasSuffix(base, suffix) {
					base = strings.TrimSuffix(base, suffix)
				}
			}
			if !code[base] {
				t.Errorf("%s: query %q uses %s, which no Go source under app registers", where, q, name)
			}
			if !strings.Contains(scrape, "\n"+name+"{") && !strings.Contains(scrape, "\n"+name+" ") {
				t.Errorf("%s: query %q uses %s, which a running replica does not export", where, q, name)
			}
		}
		for _, m := range routeLabel.FindAllStringSubmatch(q, -1) {
			if !strings.Contains(scrape, `route="`+m[1]+`"`) {
				t.Errorf("%s: query %q matches route %q, which a running replica does not report", where, q, m[1])
			}
		}
	}
}

// liveReplica starts a replica on its embedded Redis, sends it the requests
// that make every metric of the deployment material appear, and returns it
// with its /metrics text.
func liveReplica(t *testing.T) (*replica, string) {
	t.Helper()
	slack := startSlack(t)
	r := startReplica(t, "deploy", baseEnv(nil, slack.URL), slog.LevelWarn)
	if _, err := r.api.heartbeat("w-1", "billing", "running"); err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	if status, _, err := r.api.do(http.MethodPost, "/api/workers/heartbeat", "application/json", strings.NewReader(`{"id":"bad id","pool":"billing","status":"running"}`)); err != nil || status != http.StatusBadRequest {
		t.Fatalf("invalid heartbeat: status %d, err %v; want 400", status, err)
	}
	if _, err := r.api.postJSON("/api/pools/billing/scale", map[string]int{"desired_count": 3}); err != nil {
		t.Fatalf("scale: %v", err)
	}
	status, body, err := r.api.do(http.MethodGet, "/metrics", "", nil)
	if err != nil || status != http.StatusOK {
		t.Fatalf("GET /metrics: status %d, err %v", status, err)
	}
	return r, "\n" + string(body)
}

// TestDeployKubernetes checks the Deployment and Service in
// docs/deploy/kubernetes.yaml against the code: probe paths that respond
// without the token, the token from a Secret, variables the config reads,
// and a Service that selects the pods and targets their port.
func TestDeployKubernetes(t *testing.T) {
	docs := manifests(t, "kubernetes.yaml")
	dep, svc := docs["Deployment"], docs["Service"]
	if dep == nil || svc == nil || len(docs) != 2 {
		t.Fatalf("kubernetes.yaml has kinds %v, want Deployment and Service", slices.Sorted(maps.Keys(docs)))
	}
	if got := field(t, dep, "apiVersion"); got != "apps/v1" {
		t.Errorf("Deployment apiVersion %q, want apps/v1", got)
	}
	if got := field(t, svc, "apiVersion"); got != "v1" {
		t.Errorf("Service apiVersion %q, want v1", got)
	}
	if n, err := strconv.Atoi(field(t, dep, "spec", "replicas")); err != nil || n < 2 {
		t.Errorf("Deployment replicas %q, want at least 2", field(t, dep, "spec", "replicas"))
	}

	// The selector matches the pod labels, and the Service selects them.
	podLabels := node(t, dep, "spec", "template", "metadata", "labels").(map[string]any)
	for k, v := range node(t, dep, "spec", "selector", "matchLabels").(map[string]any) {
		if podLabels[k] != v {
			t.Errorf("Deployment selector %s=%v does not match the pod labels %v", k, v, podLabels)
		}
	}
	for k, v := range node(t, svc, "spec", "selector").(map[string]any) {
		if podLabels[k] != v {
			t.Errorf("Service selector %s=%v does not match the pod labels %v", k, v, podLabels)
		}
	}

	containers := node(t, dep, "spec", "template", "spec", "containers").([]any)
	if len(containers) != 1 {
		t.Fatalf("Deployment has %d containers, want 1", len(containers))
	}
	c := containers[0]

	// The container port is HTTP_ADDR's, and probes and Service use its name.
	portName := field(t, c, "ports", "0", "name")
	if got := field(t, c, "ports", "0", "containerPort"); got != "8080" {
		t.Errorf("containerPort %s, want 8080 as in HTTP_ADDR", got)
	}
	if got := field(t, svc, "spec", "ports", "0", "targetPort"); got != portName && got != "8080" {
		t.Errorf("Service targetPort %q, want the container port %q", got, portName)
	}
	for probe, path := range map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
		if got := field(t, c, probe, "httpGet", "path"); got != path {
			t.Errorf("%s path %q, want %s", probe, got, path)
		}
		if got := field(t, c, probe, "httpGet", "port"); got != portName && got != "8080" {
			t.Errorf("%s port %q, want the container port %q", probe, got, portName)
		}
	}

	// Every variable is one the config reads; the token comes from a Secret.
	configSource := readSource(t, "../config/config.go")
	env := map[string]map[string]any{}
	for _, e := range node(t, c, "env").([]any) {
		m := e.(map[string]any)
		name, _ := m["name"].(string)
		env[name] = m
		if !strings.Contains(configSource, `"`+name+`"`) {
			t.Errorf("env %s is not a variable that app/config reads", name)
		}
	}
	token := env["CONTROL_PLANE_TOKEN"]
	if token == nil {
		t.Fatal("no CONTROL_PLANE_TOKEN in the container's env")
	}
	if _, literal := token["value"]; literal {
		t.Error("CONTROL_PLANE_TOKEN has a literal value; take it from a Secret")
	}
	if field(t, token, "valueFrom", "secretKeyRef", "name") == "" || field(t, token, "valueFrom", "secretKeyRef", "key") == "" {
		t.Error("CONTROL_PLANE_TOKEN's secretKeyRef needs a name and a key")
	}
	if env["REDIS_ADDR"] == nil {
		t.Error("no REDIS_ADDR in the container's env: the replicas would each run an embedded Redis and share nothing")
	}
	if got := field(t, env["HTTP_ADDR"], "value"); got != ":8080" {
		t.Errorf("HTTP_ADDR %q, want :8080", got)
	}
	if got := field(t, dep, "spec", "template", "spec", "securityContext", "runAsNonRoot"); got != "true" {
		t.Errorf("runAsNonRoot %q, want true", got)
	}

	// The probe paths return 200 without the token on a running replica.
	r, _ := liveReplica(t)
	for _, path := range []string{"/readyz", "/healthz"} {
		res, err := http.Get(r.app.URL() + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Errorf("GET %s without the token: status %d, want 200", path, res.StatusCode)
		}
	}
}

// TestDeployKEDA checks docs/deploy/keda-scaledobject.yaml: the metrics-api
// trigger reads a pool's desired_count from the Service of kubernetes.yaml
// with bearer auth from the control plane's Secret, and that URL path and
// value location work on a running replica.
func TestDeployKEDA(t *testing.T) {
	docs := manifests(t, "keda-scaledobject.yaml")
	so, auth := docs["ScaledObject"], docs["TriggerAuthentication"]
	if so == nil || auth == nil || len(docs) != 2 {
		t.Fatalf("keda-scaledobject.yaml has kinds %v, want ScaledObject and TriggerAuthentication", slices.Sorted(maps.Keys(docs)))
	}
	for kind, doc := range docs {
		if got := field(t, doc, "apiVersion"); got != "keda.sh/v1alpha1" {
			t.Errorf("%s apiVersion %q, want keda.sh/v1alpha1", kind, got)
		}
	}
	if field(t, so, "spec", "scaleTargetRef", "name") == "" {
		t.Error("ScaledObject has no scaleTargetRef.name")
	}

	triggers := node(t, so, "spec", "triggers").([]any)
	if len(triggers) != 1 {
		t.Fatalf("ScaledObject has %d triggers, want 1", len(triggers))
	}
	trig := triggers[0]
	if got := field(t, trig, "type"); got != "metrics-api" {
		t.Errorf("trigger type %q, want metrics-api", got)
	}
	if got := field(t, trig, "metadata", "authMode"); got != "bearer" {
		t.Errorf("authMode %q, want bearer", got)
	}
	if target, err := strconv.ParseFloat(field(t, trig, "metadata", "targetValue"), 64); err != nil || target != 1 {
		t.Errorf("targetValue %q, want 1 so that replicas equal desired_count", field(t, trig, "metadata", "targetValue"))
	}
	valueLocation := field(t, trig, "metadata", "valueLocation")
	if valueLocation != "desired_count" {
		t.Errorf("valueLocation %q, want desired_count", valueLocation)
	}

	// The trigger's credentials are the control plane's token.
	if got, want := field(t, trig, "authenticationRef", "name"), field(t, auth, "metadata", "name"); got != want {
		t.Errorf("authenticationRef %q, want the TriggerAuthentication %q", got, want)
	}
	ref := node(t, auth, "spec", "secretTargetRef", "0")
	if got := field(t, ref, "parameter"); got != "token" {
		t.Errorf("secretTargetRef parameter %q, want token, which bearer auth reads", got)
	}
	k8s := manifests(t, "kubernetes.yaml")
	containerEnv := node(t, k8s["Deployment"], "spec", "template", "spec", "containers", "0", "env").([]any)
	for _, e := range containerEnv {
		if field(t, e, "name") != "CONTROL_PLANE_TOKEN" {
			continue
		}
		for _, k := range []string{"name", "key"} {
			if got, want := field(t, ref, k), field(t, e, "valueFrom", "secretKeyRef", k); got != want {
				t.Errorf("secretTargetRef %s %q, want the Deployment's token Secret %s %q", k, got, k, want)
			}
		}
	}

	// The URL is the Service's, and its path a route of the API.
	u, err := url.Parse(field(t, trig, "metadata", "url"))
	if err != nil {
		t.Fatalf("trigger url: %v", err)
	}
	if got, want := u.Hostname(), field(t, k8s["Service"], "metadata", "name"); got != want {
		t.Errorf("trigger url host %q, want the Service %q", got, want)
	}
	port := u.Port()
	if port == "" {
		port = "80"
	}
	if got := field(t, k8s["Service"], "spec", "ports", "0", "port"); got != port {
		t.Errorf("trigger url port %s, want the Service port %s", port, got)
	}
	if !strings.HasPrefix(u.Path, "/api/pools/") {
		t.Fatalf("trigger url path %q, want /api/pools/{pool}", u.Path)
	}

	r, _ := liveReplica(t)
	pool := strings.TrimPrefix(u.Path, "/api/pools/")
	if _, err := r.api.postJSON("/api/pools/"+pool+"/scale", map[string]int{"desired_count": 7}); err != nil {
		t.Fatalf("scale %s: %v", pool, err)
	}
	var body map[string]any
	if err := r.api.getJSON(u.Path, &body); err != nil {
		t.Fatalf("the scaler's request: %v", err)
	}
	v, err := lookup(body, strings.Split(valueLocation, ".")...)
	if err != nil {
		t.Fatalf("valueLocation %q in %v: %v", valueLocation, body, err)
	}
	if n, ok := v.(float64); !ok || n != 7 {
		t.Errorf("GET %s: %s is %v, want the number 7", u.Path, valueLocation, v)
	}
}

// TestDeployPrometheusRules checks that docs/deploy/prometheus-rules.yaml is
// a PrometheusRule whose alerts are complete and query only metrics the
// control plane exports.
func TestDeployPrometheusRules(t *testing.T) {
	docs := manifests(t, "prometheus-rules.yaml")
	rule := docs["PrometheusRule"]
	if rule == nil || len(docs) != 1 {
		t.Fatalf("prometheus-rules.yaml has kinds %v, want PrometheusRule", slices.Sorted(maps.Keys(docs)))
	}
	if got := field(t, rule, "apiVersion"); got != "monitoring.coreos.com/v1" {
		t.Errorf("apiVersion %q, want monitoring.coreos.com/v1", got)
	}
	duration := regexp.MustCompile(`^([0-9]+(ms|s|m|h|d|w|y))+$`)
	var queries []string
	alerts := map[string]bool{}
	for _, g := range node(t, rule, "spec", "groups").([]any) {
		if field(t, g, "name") == "" {
			t.Error("a rule group has no name")
		}
		for _, r := range node(t, g, "rules").([]any) {
			name := field(t, r, "alert")
			if alerts[name] {
				t.Errorf("alert %s is defined twice", name)
			}
			alerts[name] = true
			queries = append(queries, field(t, r, "expr"))
			if f := field(t, r, "for"); !duration.MatchString(f) {
				t.Errorf("alert %s: for %q is not a Prometheus duration", name, f)
			}
			if s := field(t, r, "labels", "severity"); s != "critical" && s != "warning" {
				t.Errorf("alert %s: severity %q, want critical or warning", name, s)
			}
			if field(t, r, "annotations", "summary") == "" || field(t, r, "annotations", "description") == "" {
				t.Errorf("alert %s needs a summary and a description", name)
			}
		}
	}
	_, scrape := liveReplica(t)
	checkQueries(t, "prometheus-rules.yaml", queries, codeMetricNames(t), scrape)
}

// TestDeployGrafanaDashboard checks that docs/deploy/grafana-dashboard.json
// is a dashboard whose panels query only metrics the control plane exports,
// through a data source variable.
func TestDeployGrafanaDashboard(t *testing.T) {
	var dash struct {
		Title      string `json:"title"`
		UID        string `json:"uid"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query string `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Title      string `json:"title"`
			Type       string `json:"type"`
			Datasource struct {
				Type string `json:"type"`
				UID  string `json:"uid"`
			} `json:"datasource"`
			Targets []struct {
				Expr  string `json:"expr"`
				RefID string `json:"refId"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(readDeployFile(t, "grafana-dashboard.json")), &dash); err != nil {
		t.Fatalf("parse docs/deploy/grafana-dashboard.json: %v", err)
	}
	if dash.Title == "" || dash.UID == "" {
		t.Errorf("dashboard title %q, uid %q: want both", dash.Title, dash.UID)
	}
	variable := ""
	for _, v := range dash.Templating.List {
		if v.Type == "datasource" && v.Query == "prometheus" {
			variable = "${" + v.Name + "}"
		}
	}
	if variable == "" {
		t.Fatal("the dashboard has no Prometheus data source variable, so it works only with one named data source")
	}
	if len(dash.Panels) == 0 {
		t.Fatal("the dashboard has no panels")
	}
	var queries []string
	for _, p := range dash.Panels {
		if p.Title == "" || p.Type == "" {
			t.Errorf("panel %+v needs a title and a type", p)
		}
		if p.Datasource.Type != "prometheus" || p.Datasource.UID != variable {
			t.Errorf("panel %q: data source %+v, want prometheus with uid %s", p.Title, p.Datasource, variable)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no queries", p.Title)
		}
		for _, q := range p.Targets {
			queries = append(queries, q.Expr)
		}
	}
	_, scrape := liveReplica(t)
	checkQueries(t, "grafana-dashboard.json", queries, codeMetricNames(t), scrape)
}

// TestDeployDockerfile checks docs/deploy/Dockerfile as text, because
// docker does not run in the tests. It wants a Go build stage at go.mod's
// version that builds a static binary of the main package, and a
// distroless or scratch final stage that runs as a non-root user and
// exposes HTTP_ADDR's port.
func TestDeployDockerfile(t *testing.T) {
	var froms, stages []string
	instructions := map[string][]string{}
	for _, line := range strings.Split(readDeployFile(t, "Dockerfile"), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		word, rest, _ := strings.Cut(line, " ")
		word = strings.ToUpper(word)
		if word == "FROM" {
			f := strings.Fields(rest)
			froms = append(froms, f[0])
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				stages = append(stages, f[2])
			} else {
				stages = append(stages, "")
			}
			continue
		}
		instructions[word] = append(instructions[word], rest)
	}
	if len(froms) < 2 {
		t.Fatalf("Dockerfile has %d FROM lines, want a build stage and a final stage", len(froms))
	}

	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(readSource(t, "../../go.mod"))
	if goVersion == nil {
		t.Fatal("go.mod has no go directive")
	}
	if want := "golang:" + goVersion[1]; !strings.HasPrefix(froms[0], want) {
		t.Errorf("build stage FROM %s, want %s to match go.mod", froms[0], want)
	}
	final := froms[len(froms)-1]
	if final != "scratch" && !strings.HasPrefix(final, "gcr.io/distroless/") {
		t.Errorf("final stage FROM %s, want distroless or scratch", final)
	}

	build := strings.Join(instructions["RUN"], "\n")
	if !regexp.MustCompile(`CGO_ENABLED=0 go build\b.* \.$`).MatchString(build) {
		t.Errorf("no RUN that builds the main package with CGO_ENABLED=0 go build ... . in:\n%s", build)
	}
	copied := false
	for _, c := range instructions["COPY"] {
		if stages[0] != "" && strings.HasPrefix(c, "--from="+stages[0]+" ") {
			copied = true
		}
	}
	if !copied {
		t.Errorf("the final stage copies nothing from the build stage %q: COPY lines %q", stages[0], instructions["COPY"])
	}
	users := instructions["USER"]
	if len(users) == 0 {
		t.Error("no USER: the image would run as root")
	} else if u, _, _ := strings.Cut(users[len(users)-1], ":"); u == "root" || u == "0" {
		t.Errorf("USER %s runs as root", users[len(users)-1])
	}
	if !slices.Contains(instructions["EXPOSE"], "8080") {
		t.Errorf("EXPOSE %q, want 8080", instructions["EXPOSE"])
	}
	if len(instructions["ENTRYPOINT"]) == 0 && len(instructions["CMD"]) == 0 {
		t.Error("no ENTRYPOINT or CMD")
	}

	ignore := strings.Fields(readDeployFile(t, "Dockerfile.dockerignore"))
	for _, want := range []string{".env", ".git"} {
		if !slices.Contains(ignore, want) {
			t.Errorf("Dockerfile.dockerignore does not exclude %s", want)
		}
	}
}

func readSource(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return string(b)
}

// TestParseYAML checks the YAML reader of the deployment tests on the forms
// the manifests use and on forms it must reject.
func TestParseYAML(t *testing.T) {
	src := `# comment
a: plain
b: "double \"quoted\""
c: 'single ''quoted'''
d:
  - x
  - k: v
    l: w
e:
- y
f: text # trailing comment
---
g: "{{ $labels.pool }}"
`
	docs, err := parseYAML(src)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if len(docs) != 2 {
		t.Fatalf("%d documents, want 2", len(docs))
	}
	got, _ := json.Marshal(docs)
	want := `[{"a":"plain","b":"double \"quoted\"","c":"single 'quoted'","d":["x",{"k":"v","l":"w"}],"e":["y"],"f":"text"},{"g":"{{ $labels.pool }}"}]`
	if string(got) != want {
		t.Errorf("parsed\n%s\nwant\n%s", got, want)
	}

	for _, bad := range []string{
		"a: [1, 2]",
		"a: {b: c}",
		"a: |\n  text",
		"a: &anchor x",
		"a: b: c",
		"a: x\na: y",
		"a:\n\t- x",
		"a: x\n  b: y",
		`a: "open`,
	} {
		if _, err := parseYAML(bad); err == nil {
			t.Errorf("parseYAML(%q) returned no error", bad)
		}
	}
}
