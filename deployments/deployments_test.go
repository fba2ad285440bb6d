package deployments

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// Ports that must never be published on a host interface: Redis, NATS clients (devices
// reach NATS through a deliberate, TLS-fronted route, not a compose default) and NATS
// monitoring.
var private = []int{6379, 4222, 8222}

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
}

type composeService struct {
	Profiles    []string       `yaml:"profiles"`
	Image       string         `yaml:"image"`
	Build       any            `yaml:"build"`
	Entrypoint  any            `yaml:"entrypoint"`
	Command     any            `yaml:"command"`
	Environment map[string]any `yaml:"environment"`
	Ports       []any          `yaml:"ports"`
	Volumes     []any          `yaml:"volumes"`
	ReadOnly    bool           `yaml:"read_only"`
	CapDrop     []string       `yaml:"cap_drop"`
	SecurityOpt []string       `yaml:"security_opt"`
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	data, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	if len(c.Services) == 0 {
		t.Fatal("docker-compose.yml has no services")
	}
	return c
}

// interpolate applies compose's ${VAR:-default} and ${VAR:?error} with nothing set: what
// a user who sets nothing gets (a required variable reads as "<required>").
var varRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-?])([^}]*))?\}`)

func interpolate(s string) string {
	return varRE.ReplaceAllStringFunc(s, func(m string) string {
		sub := varRE.FindStringSubmatch(m)
		switch sub[2] {
		case "-":
			return sub[3]
		case "?":
			return "<required>"
		}
		return ""
	})
}

type published struct {
	hostIP        string
	containerPort int
}

// parsePort reads a compose port in short ("[ip:]host:container[/proto]") or long form.
func parsePort(t *testing.T, p any) published {
	t.Helper()
	switch v := p.(type) {
	case string:
		s := interpolate(v)
		s, _, _ = strings.Cut(s, "/")
		parts := strings.Split(s, ":")
		cp, err := strconv.Atoi(parts[len(parts)-1])
		if err != nil {
			t.Fatalf("port %q: container port: %v", v, err)
		}
		ip := ""
		if len(parts) == 3 {
			ip = parts[0]
		}
		return published{hostIP: ip, containerPort: cp}
	case int:
		return published{containerPort: v}
	case map[string]any:
		target, _ := v["target"].(int)
		ip, _ := v["host_ip"].(string)
		return published{hostIP: interpolate(ip), containerPort: target}
	}
	t.Fatalf("port %v: unknown form", p)
	return published{}
}

func joined(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []any:
		var parts []string
		for _, e := range x {
			parts = append(parts, joined(e))
		}
		return strings.Join(parts, " ")
	}
	return ""
}

func TestComposePublishesOnlyWhatUsersNeed(t *testing.T) {
	c := loadCompose(t)
	for name, s := range c.Services {
		for _, p := range s.Ports {
			pp := parsePort(t, p)
			if slices.Contains(private, pp.containerPort) {
				t.Errorf("%s publishes %d on the host", name, pp.containerPort)
			}
			// gRPC and metrics default to loopback; only the tracker port faces the field.
			if pp.containerPort != 5027 && pp.hostIP != "127.0.0.1" {
				t.Errorf("%s publishes %d on %q by default, want 127.0.0.1", name, pp.containerPort, pp.hostIP)
			}
		}
	}
	for _, name := range []string{"nats", "redis"} {
		if len(c.Services[name].Ports) > 0 {
			t.Errorf("%s publishes ports %v; it serves the compose network only", name, c.Services[name].Ports)
		}
	}
	for _, want := range []string{"devices", "callout"} {
		if _, ok := c.Services[want]; !ok {
			t.Errorf("no %s service (without the callout responder no device can log in)", want)
		}
	}
}

func TestComposeRedisHasAPasswordAndPersistence(t *testing.T) {
	c := loadCompose(t)
	redis := c.Services["redis"]
	cmd := joined(redis.Entrypoint) + " " + joined(redis.Command)
	for _, want := range []string{"requirepass", "appendonly yes"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("redis starts with %q, want %s", cmd, want)
		}
	}
	if pw, _ := redis.Environment["REDIS_PASSWORD"].(string); !strings.Contains(interpolate(pw), "<required>") {
		t.Errorf("REDIS_PASSWORD is %q, want a required variable (no default password)", pw)
	}
	users := 0
	for name, s := range c.Services {
		u, ok := s.Environment["REDIS_URL"].(string)
		if !ok {
			continue
		}
		users++
		// The password is the required variable: no URL without it, no default one.
		if !regexp.MustCompile(`^(rediss?|redis-sentinel)://[^@/]*:<required>@`).MatchString(interpolate(u)) {
			t.Errorf("%s: REDIS_URL %q does not carry the required REDIS_PASSWORD", name, u)
		}
	}
	if users == 0 {
		t.Error("no service has a REDIS_URL")
	}
}

func TestComposeNATSUsesTheConfigFile(t *testing.T) {
	c := loadCompose(t)
	nats := c.Services["nats"]
	if cmd := joined(nats.Command); !strings.Contains(cmd, "-c /etc/nats/nats-server.conf") {
		t.Errorf("nats command %q does not load its configuration file", cmd)
	}
	mounted := false
	for _, v := range nats.Volumes {
		if s, _ := v.(string); strings.HasPrefix(s, "./deployments/nats/nats-server.conf:") {
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("nats mounts %v, want ./deployments/nats/nats-server.conf", nats.Volumes)
	}
	// Every other file mounted from the repository exists (the NATS configuration is
	// generated from pkg/natsauth's permission table).
	for name, s := range c.Services {
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(fmtString(v), ":")
			if !strings.HasPrefix(src, "./") || src == "./deployments/nats/nats-server.conf" {
				continue
			}
			if _, err := os.Stat(filepath.Join("..", src)); err != nil {
				t.Errorf("%s mounts %s: %v", name, src, err)
			}
		}
	}
}

func fmtString(v any) string { s, _ := v.(string); return s }

var versionTag = regexp.MustCompile(`:[0-9]+\.[0-9]+\.[0-9]+`)

func TestComposeContainers(t *testing.T) {
	c := loadCompose(t)
	for name, s := range c.Services {
		if s.Image == "" || !strings.Contains(s.Image, ":") || strings.HasSuffix(s.Image, ":latest") {
			t.Errorf("%s: image %q, want a pinned tag (not latest)", name, s.Image)
		}
		if s.Build == nil { // third-party images: pinned by version
			if !versionTag.MatchString(s.Image) {
				t.Errorf("%s: image %q, want a version tag", name, s.Image)
			}
			continue
		}
		// Fleetwire's own containers: read-only root, no capabilities, no new privileges.
		if !s.ReadOnly || !slices.Contains(s.CapDrop, "ALL") || !slices.Contains(s.SecurityOpt, "no-new-privileges:true") {
			t.Errorf("%s: read_only %v, cap_drop %v, security_opt %v; want true, [ALL], no-new-privileges", name, s.ReadOnly, s.CapDrop, s.SecurityOpt)
		}
	}
}

// k8s is one manifest document, loosely typed.
type k8s map[string]any

func loadK8s(t *testing.T) []k8s {
	t.Helper()
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in deployments/kubernetes: %v", err)
	}
	var docs []k8s
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var d k8s
			if err := dec.Decode(&d); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if d != nil {
				docs = append(docs, d)
			}
		}
	}
	return docs
}

// get walks a path of map keys.
func get(v any, path ...string) any {
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			if km, ok2 := v.(k8s); ok2 {
				m = km
			} else {
				return nil
			}
		}
		v = m[k]
	}
	return v
}

func name(d k8s) string { s, _ := get(d, "metadata", "name").(string); return s }

func TestKubernetesWorkloads(t *testing.T) {
	workloads := map[string]bool{}
	for _, d := range loadK8s(t) {
		kind, _ := d["kind"].(string)
		if kind != "Deployment" && kind != "StatefulSet" {
			continue
		}
		workloads[name(d)] = true
		pod := get(d, "spec", "template", "spec")
		if get(pod, "automountServiceAccountToken") != false {
			t.Errorf("%s: the pod mounts a service account token it does not need", name(d))
		}
		containers, _ := get(pod, "containers").([]any)
		if len(containers) == 0 {
			t.Errorf("%s: no containers", name(d))
		}
		for _, c := range containers {
			cn := fmtString(get(c, "name"))
			where := name(d) + "/" + cn
			sc := get(c, "securityContext")
			for _, check := range []struct {
				path []string
				want any
			}{
				{[]string{"runAsNonRoot"}, true},
				{[]string{"readOnlyRootFilesystem"}, true},
				{[]string{"allowPrivilegeEscalation"}, false},
				{[]string{"seccompProfile", "type"}, "RuntimeDefault"},
			} {
				if got := get(sc, check.path...); got != check.want {
					t.Errorf("%s: securityContext.%s = %v, want %v", where, strings.Join(check.path, "."), got, check.want)
				}
			}
			if drop, _ := get(sc, "capabilities", "drop").([]any); !slices.Contains(drop, any("ALL")) {
				t.Errorf("%s: capabilities.drop = %v, want ALL", where, drop)
			}
			for _, kind := range []string{"requests", "limits"} {
				for _, res := range []string{"cpu", "memory"} {
					if get(c, "resources", kind, res) == nil {
						t.Errorf("%s: no resources.%s.%s", where, kind, res)
					}
				}
			}
			image := fmtString(get(c, "image"))
			if !strings.Contains(image, ":") || strings.HasSuffix(image, ":latest") {
				t.Errorf("%s: image %q, want a pinned tag (not latest)", where, image)
			}
			// Credentials come from Secrets: no literal value for a secret-looking variable.
			env, _ := get(c, "env").([]any)
			for _, e := range env {
				n := fmtString(get(e, "name"))
				v, literal := get(e, "value").(string)
				secretName := strings.Contains(n, "PASSWORD") || strings.Contains(n, "TOKEN") || strings.Contains(n, "SECRET")
				if secretName && literal {
					t.Errorf("%s: %s has a literal value; want valueFrom.secretKeyRef", where, n)
				}
				if n == "REDIS_URL" && !strings.Contains(v, "$(REDIS_PASSWORD)@") {
					t.Errorf("%s: REDIS_URL %q does not take the password from the Secret", where, v)
				}
			}
		}
	}
	for _, want := range []string{"tracking", "geofence", "maintenance", "dispatch", "devices", "callout"} {
		if !workloads[want] {
			t.Errorf("no %s workload", want)
		}
	}
}

func TestKubernetesNetworkPolicies(t *testing.T) {
	denyAll := false
	selected := map[string]bool{}
	for _, d := range loadK8s(t) {
		if d["kind"] != "NetworkPolicy" {
			continue
		}
		sel, _ := get(d, "spec", "podSelector").(map[string]any)
		types, _ := get(d, "spec", "policyTypes").([]any)
		if len(sel) == 0 && slices.Contains(types, any("Ingress")) && slices.Contains(types, any("Egress")) &&
			get(d, "spec", "ingress") == nil && get(d, "spec", "egress") == nil {
			denyAll = true
		}
		for _, dir := range []string{"ingress", "egress"} {
			rules, _ := get(d, "spec", dir).([]any)
			for _, r := range rules {
				if get(r, "ports") == nil {
					t.Errorf("%s: an %s rule without ports opens every port", name(d), dir)
				}
			}
		}
		selected[name(d)] = true
	}
	if !denyAll {
		t.Error("no default-deny NetworkPolicy (empty podSelector, Ingress and Egress, no rules)")
	}
	for _, want := range []string{"fleetwire-to-nats", "fleetwire-to-redis", "fleetwire-ingress"} {
		if !selected[want] {
			t.Errorf("no NetworkPolicy %s", want)
		}
	}
}

// Every variable the NATS configuration names reaches the NATS container: nats-server
// refuses to start with one unset.
func TestComposeGivesNATSEveryVariableItsConfigurationNames(t *testing.T) {
	data, err := os.ReadFile("nats/nats-server.conf")
	if errors.Is(err, os.ErrNotExist) {
		t.Skip("deployments/nats/nats-server.conf is not generated yet (pkg/natsauth's table)")
	}
	if err != nil {
		t.Fatal(err)
	}
	env := loadCompose(t).Services["nats"].Environment
	// A variable stands as a whole value ("password: $FLEETWIRE_NATS_TRACKING_PASSWORD");
	// "$JS.API.>" inside a subject list is no variable.
	refs := regexp.MustCompile(`(?m):\s*\$([A-Z][A-Z0-9_]*)\s*$`).FindAllStringSubmatch(string(data), -1)
	if len(refs) == 0 {
		t.Fatal("the NATS configuration names no variables; want the identities' passwords")
	}
	for _, r := range refs {
		if _, ok := env[r[1]]; !ok {
			t.Errorf("nats-server.conf reads $%s, which compose does not give the nats container", r[1])
		}
	}
}

// The cluster profile: three NATS nodes from the clustered configuration, each with its
// own name and every node's route, Redis with a replica and three sentinels, and two
// instances of every service sharing partitions by lease, with R3 streams, every node in
// NATS_URL and the sentinels in REDIS_URL. (docker compose config checks the syntax where
// Docker is installed; this checks the meaning.)
func TestComposeClusterProfile(t *testing.T) {
	c := loadCompose(t)
	var cluster []string
	for name, s := range c.Services {
		if slices.Contains(s.Profiles, "cluster") {
			cluster = append(cluster, name)
		}
	}
	nodes := []string{"nats-1", "nats-2", "nats-3"}
	for _, n := range nodes {
		s, ok := c.Services[n]
		if !ok || !slices.Contains(cluster, n) {
			t.Fatalf("no %s in the cluster profile", n)
		}
		if !strings.Contains(joined(s.Command), "-c /etc/nats/nats-cluster.conf") {
			t.Errorf("%s: command %q, want the clustered configuration", n, joined(s.Command))
		}
		if got := fmtString(s.Environment["FLEETWIRE_NATS_SERVER_NAME"]); got != n {
			t.Errorf("%s: server name %q", n, got)
		}
		routes := interpolate(fmtString(s.Environment["FLEETWIRE_NATS_ROUTES"]))
		for _, o := range nodes {
			if !strings.Contains(routes, "nats://route:<required>@"+o+":6222") {
				t.Errorf("%s: routes %q lack %s with the route identity's password", n, routes, o)
			}
		}
		if len(s.Ports) > 0 {
			t.Errorf("%s publishes %v", n, s.Ports)
		}
	}
	for _, r := range []string{"redis-primary", "redis-replica", "redis-sentinel-1", "redis-sentinel-2", "redis-sentinel-3"} {
		if !slices.Contains(cluster, r) {
			t.Errorf("no %s in the cluster profile", r)
		}
	}
	if cmd := joined(c.Services["redis-replica"].Entrypoint); !strings.Contains(cmd, "replicaof redis-primary 6379") {
		t.Errorf("redis-replica does not replicate the primary: %q", cmd)
	}
	if cmd := joined(c.Services["redis-sentinel-1"].Entrypoint); !strings.Contains(cmd, "sentinel monitor fleet redis-primary 6379 2") {
		t.Errorf("sentinels do not watch the primary with a quorum of 2: %q", cmd)
	}
	for _, svc := range []string{"tracking", "geofence", "maintenance", "dispatch"} {
		for _, i := range []string{"1", "2"} {
			name := svc + "-" + i
			s, ok := c.Services[name]
			if !ok || !slices.Contains(cluster, name) {
				t.Errorf("no %s in the cluster profile", name)
				continue
			}
			env := s.Environment
			for k, want := range map[string]string{
				"FLEETWIRE_PARTITIONS": "auto", "FLEETWIRE_STREAM_REPLICAS": "3", "FLEETWIRE_NATS_USER": svc,
				"NATS_URL": "nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222",
			} {
				if got := fmtString(env[k]); got != want {
					t.Errorf("%s: %s = %q, want %q", name, k, got, want)
				}
			}
			if u := interpolate(fmtString(env["REDIS_URL"])); !strings.HasPrefix(u, "redis-sentinel://:<required>@redis-sentinel-1:26379,redis-sentinel-2:26379,redis-sentinel-3:26379/fleet") {
				t.Errorf("%s: REDIS_URL %q, want the sentinels", name, u)
			}
		}
	}
	// Nothing of the single-node stack is in the profile, and the profile's services
	// never talk to the single-node NATS or Redis.
	for _, name := range cluster {
		s := c.Services[name]
		if u := fmtString(s.Environment["NATS_URL"]); u != "" && strings.Contains(u, "nats://nats:") {
			t.Errorf("%s talks to the single-node NATS: %q", name, u)
		}
	}
}

// Scale-out: every StatefulSet names a headless Service that selects its pods, every
// workload has a PodDisruptionBudget, a readiness probe, and (the services) partitions by
// lease; the streams are R3 and NATS_URL lists every node of the NATS cluster.
func TestKubernetesScaleOut(t *testing.T) {
	docs := loadK8s(t)
	byKind := map[string]map[string]k8s{}
	for _, d := range docs {
		kind := fmtString(d["kind"])
		if byKind[kind] == nil {
			byKind[kind] = map[string]k8s{}
		}
		byKind[kind][name(d)] = d
	}
	labels := func(d k8s) map[string]any {
		return asMap(get(d, "spec", "selector", "matchLabels"))
	}
	selects := func(sel any, want map[string]any) bool {
		m := asMap(sel)
		if len(m) == 0 {
			return false
		}
		for k, v := range m {
			if want[k] != v {
				return false
			}
		}
		return true
	}
	if len(byKind["StatefulSet"]) == 0 {
		t.Fatal("no StatefulSets")
	}
	for n, ss := range byKind["StatefulSet"] {
		svcName := fmtString(get(ss, "spec", "serviceName"))
		svc, ok := byKind["Service"][svcName]
		switch {
		case !ok:
			t.Errorf("StatefulSet %s names Service %q, which does not exist", n, svcName)
		case fmtString(get(svc, "spec", "clusterIP")) != "None":
			t.Errorf("Service %s is not headless", svcName)
		case !selects(get(svc, "spec", "selector"), labels(ss)):
			t.Errorf("Service %s does not select StatefulSet %s's pods", svcName, n)
		}
		env, _ := get(ss, "spec", "template", "spec", "containers").([]any)
		partitions := ""
		for _, c := range env {
			vars, _ := get(c, "env").([]any)
			for _, e := range vars {
				if fmtString(get(e, "name")) == "FLEETWIRE_PARTITIONS" {
					partitions = fmtString(get(e, "value"))
				}
			}
		}
		if partitions != "auto" {
			t.Errorf("StatefulSet %s: FLEETWIRE_PARTITIONS %q, want auto (leases: a dead pod's partitions move)", n, partitions)
		}
	}
	for _, kind := range []string{"StatefulSet", "Deployment"} {
		for n, w := range byKind[kind] {
			found := false
			for _, pdb := range byKind["PodDisruptionBudget"] {
				if selects(get(pdb, "spec", "selector", "matchLabels"), labels(w)) {
					found = true
				}
			}
			if !found {
				t.Errorf("%s %s has no PodDisruptionBudget", kind, n)
			}
			containers, _ := get(w, "spec", "template", "spec", "containers").([]any)
			for _, c := range containers {
				// The callout responder serves no API (nothing to route to it): no probe.
				if get(c, "readinessProbe") == nil && n != "callout" {
					t.Errorf("%s %s: no readiness probe", kind, n)
				}
			}
		}
	}
	cm := byKind["ConfigMap"]["fleetwire"]
	if got := fmtString(get(cm, "data", "FLEETWIRE_STREAM_REPLICAS")); got != "3" {
		t.Errorf("FLEETWIRE_STREAM_REPLICAS %q, want 3", got)
	}
	if got := fmtString(get(cm, "data", "NATS_URL")); len(strings.Split(got, ",")) != 3 {
		t.Errorf("NATS_URL %q, want every node of the 3-node cluster", got)
	}
}

// asMap reads a decoded mapping (nested ones decode as k8s).
func asMap(v any) map[string]any {
	switch m := v.(type) {
	case map[string]any:
		return m
	case k8s:
		return m
	}
	return nil
}

// The NATS chart's values: a 3-node JetStream cluster with authenticated routes that
// includes nats-auth.conf and gives the server every variable that file reads, each from
// a Secret.
func TestHelmValuesGiveNATSItsConfiguration(t *testing.T) {
	data, err := os.ReadFile("nats/helm-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := yaml.Unmarshal(data, &v); err != nil {
		t.Fatalf("helm-values.yaml: %v", err)
	}
	if get(v, "config", "cluster", "enabled") != true || get(v, "config", "cluster", "replicas") != 3 {
		t.Errorf("cluster: %v, want enabled with 3 replicas", get(v, "config", "cluster"))
	}
	if get(v, "config", "cluster", "routeURLs", "user") != "route" || get(v, "config", "cluster", "routeURLs", "password") != nil {
		t.Errorf("routes: %v, want the route identity with the password given at install, not in the file", get(v, "config", "cluster", "routeURLs"))
	}
	if get(v, "config", "jetstream", "enabled") != true {
		t.Error("JetStream is not enabled")
	}
	if inc := fmtString(get(v, "config", "merge", "$include")); !strings.HasSuffix(inc, "/nats-auth.conf") {
		t.Errorf("the chart's configuration includes %q, want nats-auth.conf", inc)
	}
	auth, err := os.ReadFile("nats/nats-auth.conf")
	if err != nil {
		t.Fatal(err)
	}
	env := asMap(get(v, "container", "env"))
	refs := regexp.MustCompile(`(?m):\s*\$([A-Z][A-Z0-9_]*)\s*$`).FindAllStringSubmatch(string(auth), -1)
	if len(refs) == 0 {
		t.Fatal("nats-auth.conf reads no variables")
	}
	for _, r := range refs {
		if get(env[r[1]], "valueFrom", "secretKeyRef", "name") == nil {
			t.Errorf("nats-auth.conf reads $%s, which the values do not take from a Secret", r[1])
		}
	}
}
