package deploytest

import (
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"rooms/gateway/internal/app"
	"rooms/shared/config"
)

// Docker compose itself (`docker compose config`) cannot run here: there is
// no container engine. These tests check what can be checked from the files.

// pinnedTag is a version tag with at least major.minor (v3.5.0, 17.6-bookworm,
// 1.26.11-bookworm, 12.11-slim): a bare major (redis:7) still floats.
var pinnedTag = regexp.MustCompile(`^v?\d+\.\d+(\.\d+)*([-_.][A-Za-z0-9._-]+)?$`)

// pinned reports whether an image reference names one version: a digest, or
// a version tag other than latest.
func pinned(ref string) bool {
	if name, digest, ok := strings.Cut(ref, "@"); ok {
		return regexp.MustCompile(`^sha256:[0-9a-f]{64}$`).MatchString(digest) && name != ""
	}
	slash := strings.LastIndex(ref, "/")
	colon := strings.LastIndex(ref, ":")
	if colon < slash+1 {
		return false // no tag: latest
	}
	tag := ref[colon+1:]
	return tag != "latest" && pinnedTag.MatchString(tag)
}

func TestPinned(t *testing.T) {
	for ref, want := range map[string]bool{
		"postgres:17.6-bookworm":                   true,
		"prom/prometheus:v3.5.0":                   true,
		"ghcr.io/amacneil/dbmate:2.36.0":           true,
		"localhost:5000/rooms/gateway:1.2.3":       true,
		"redis@sha256:" + strings.Repeat("ab", 32): true,
		"redis":                        false,
		"redis:latest":                 false,
		"redis:7":                      false,
		"redis:alpine":                 false,
		"localhost:5000/rooms/gateway": false,
		"redis@sha256:abc":             false,
	} {
		if got := pinned(ref); got != want {
			t.Errorf("pinned(%q) = %v, want %v", ref, got, want)
		}
	}
}

// dockerfile is what the checks need from a Dockerfile.
type dockerfile struct {
	images    []string // FROM images that are not earlier stages
	finalUser string   // the last USER of the last stage ("" when none)
	text      string
}

func readDockerfile(t *testing.T, path string) dockerfile {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		t.Fatal(err)
	}
	var d dockerfile
	d.text = string(raw)
	stages := map[string]bool{}
	for _, line := range strings.Split(d.text, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM":
			args := slices.DeleteFunc(f[1:], func(a string) bool { return strings.HasPrefix(a, "--") })
			if len(args) == 0 {
				t.Fatalf("%s: FROM without an image", path)
			}
			if !stages[strings.ToLower(args[0])] {
				d.images = append(d.images, args[0])
			}
			if len(args) >= 3 && strings.EqualFold(args[1], "AS") {
				stages[strings.ToLower(args[2])] = true
			}
			d.finalUser = ""
		case "USER":
			if len(f) > 1 {
				d.finalUser = f[1]
			}
		}
	}
	return d
}

// TestComposeImagesPinned: every image of the stack, pulled or built from,
// is one fixed version.
func TestComposeImagesPinned(t *testing.T) {
	s := loadStack(t)
	for _, name := range s.sortedNames() {
		svc := s.services[name]
		switch {
		case svc.Build != nil:
			path := filepath.Join("compose", svc.Build.Context, svc.Build.Dockerfile)
			d := readDockerfile(t, path)
			if len(d.images) == 0 {
				t.Errorf("service %s: %s has no FROM", name, path)
			}
			for _, img := range d.images {
				if !pinned(img) {
					t.Errorf("service %s: %s: image %q is not pinned to a version", name, path, img)
				}
			}
		case svc.Image != "":
			if !pinned(svc.Image) {
				t.Errorf("service %s: image %q is not pinned to a version", name, svc.Image)
			}
		default:
			t.Errorf("service %s has neither image nor build", name)
		}
	}
}

// TestDockerfilesBinaries: the gateway and worker images are built with cgo
// (librdkafka) and run as a non-root user.
func TestDockerfilesBinaries(t *testing.T) {
	for _, path := range []string{"gateway/Dockerfile", "worker/Dockerfile"} {
		d := readDockerfile(t, path)
		if len(d.images) < 2 {
			t.Errorf("%s: want a build stage and a separate final stage, got images %v", path, d.images)
		}
		if !strings.Contains(d.text, "CGO_ENABLED=1") {
			t.Errorf("%s: confluent-kafka-go needs CGO_ENABLED=1", path)
		}
		if u, _, _ := strings.Cut(d.finalUser, ":"); u == "" || u == "root" || u == "0" {
			t.Errorf("%s: the final stage runs as %q, want a non-root USER", path, d.finalUser)
		}
		if _, err := os.Stat(filepath.Join(root, path+".dockerignore")); err != nil {
			t.Errorf("%s: want %s.dockerignore to keep the build context small: %v", path, path, err)
		}
	}
}

// TestComposeGatewayEnv: every setting given to a gateway is one the
// gateway reads, the required ones are set, and together they parse.
func TestComposeGatewayEnv(t *testing.T) {
	s := loadStack(t)
	gateways := s.builtFrom("gateway/Dockerfile")
	if len(gateways) == 0 {
		t.Fatal("no service is built from gateway/Dockerfile")
	}
	known := config.Names(app.Config{})
	replicas := 0
	for _, name := range gateways {
		svc := s.services[name]
		replicas += replicaCount(svc)
		env := s.env(t, name)
		for k := range env {
			if !slices.Contains(known, k) {
				t.Errorf("service %s: %s is not a gateway setting (app.Config reads %v)", name, k, known)
			}
		}
		for _, k := range []string{"DATABASE_URL", "REDIS_ADDR", "REDIS_PASSWORD", "KAFKA_BROKERS", "KAFKA_TOPIC",
			"KAFKA_PARTITIONS", "KAFKA_REPLICATION", "JWT_SECRET", "HTTP_ADDR", "TRUSTED_PROXIES", "ALLOWED_ORIGINS"} {
			if env[k] == "" {
				t.Errorf("service %s: %s must be set", name, k)
			}
		}
		if _, err := app.ParseConfig(func(k string) string { return env[k] }); err != nil {
			t.Errorf("service %s: the gateway refuses its configuration: %v", name, err)
		}
		if len(svc.Ports) != 0 {
			t.Errorf("service %s publishes %v: gateways are reached through the proxy only", name, svc.Ports)
		}
		checkEndpoints(t, s, name, env)
	}
	if replicas < 2 {
		t.Errorf("want at least 2 gateways, got %d", replicas)
	}
}

// TestComposeSharedSettings: gateways and workers agree on everything both
// read (database, Redis keys, topic, content limit).
func TestComposeSharedSettings(t *testing.T) {
	s := loadStack(t)
	gateways, workers := s.builtFrom("gateway/Dockerfile"), s.builtFrom("worker/Dockerfile")
	if len(gateways) == 0 || len(workers) == 0 {
		t.Fatalf("want gateway and worker services, got %v and %v", gateways, workers)
	}
	ref := s.env(t, gateways[0])
	if got := s.env(t, "migrate")["DATABASE_URL"]; got != ref["DATABASE_URL"] {
		t.Errorf("migrate migrates %q, the gateways use %q", got, ref["DATABASE_URL"])
	}
	for _, name := range append(gateways[1:], workers...) {
		env := s.env(t, name)
		for _, k := range []string{"DATABASE_URL", "REDIS_ADDR", "REDIS_PASSWORD", "REDIS_DB", "REDIS_PREFIX",
			"KAFKA_BROKERS", "KAFKA_TOPIC", "KAFKA_PARTITIONS", "KAFKA_REPLICATION", "MAX_CONTENT"} {
			if env[k] != ref[k] {
				t.Errorf("%s=%q on %s but %q on %s", k, env[k], name, ref[k], gateways[0])
			}
		}
	}
}

// checkEndpoints: the database, Redis and Kafka addresses name services of
// the stack, on the ports those services serve.
func checkEndpoints(t *testing.T, s *stack, name string, env map[string]string) {
	t.Helper()
	u, err := url.Parse(env["DATABASE_URL"])
	if err != nil {
		t.Fatalf("service %s: DATABASE_URL: %v", name, err)
	}
	db, ok := s.services[u.Hostname()]
	_, replica := db.Environment["PRIMARY_HOST"]
	if !ok || !strings.HasPrefix(db.Image, "postgres:") || replica || u.Port() != "5432" {
		t.Errorf("service %s: DATABASE_URL host %q is not the stack's PostgreSQL primary on 5432", name, u.Host)
	}
	if host, port := hostPort(t, name+": REDIS_ADDR", env["REDIS_ADDR"]); !strings.HasPrefix(s.services[host].Image, "redis:") || port != 6379 {
		t.Errorf("service %s: REDIS_ADDR %q is not the stack's Redis on 6379", name, env["REDIS_ADDR"])
	}
	brokers := strings.Split(env["KAFKA_BROKERS"], ",")
	nodes := kafkaNodes(s)
	if len(brokers) != len(nodes) {
		t.Errorf("service %s: KAFKA_BROKERS lists %d brokers, the stack runs %d", name, len(brokers), len(nodes))
	}
	for _, b := range brokers {
		host, _ := hostPort(t, name+": KAFKA_BROKERS", b)
		if !slices.Contains(nodes, host) || !strings.Contains(s.env(t, host)["KAFKA_ADVERTISED_LISTENERS"], "://"+b) {
			t.Errorf("service %s: broker %q is not a Kafka node of the stack advertising that address", name, b)
		}
	}
}

func replicaCount(svc service) int {
	if svc.Deploy != nil && svc.Deploy.Replicas != nil {
		return *svc.Deploy.Replicas
	}
	return 1
}

// kafkaNodes lists the services that run a Kafka node, sorted.
func kafkaNodes(s *stack) []string {
	var nodes []string
	for _, name := range s.sortedNames() {
		if _, ok := s.services[name].Environment["KAFKA_NODE_ID"]; ok {
			nodes = append(nodes, name)
		}
	}
	return nodes
}

// TestComposeHealthchecks: every long-running service has a health check
// and a restart policy; the rest are one-shot jobs that are not restarted.
func TestComposeHealthchecks(t *testing.T) {
	s := loadStack(t)
	for _, name := range s.sortedNames() {
		svc := s.services[name]
		if svc.Restart == "no" {
			if svc.Healthcheck != nil {
				t.Errorf("service %s is a one-shot job (restart: \"no\") with a health check", name)
			}
			continue
		}
		if svc.Healthcheck == nil || svc.Healthcheck.Disable || len(svc.Healthcheck.Test) == 0 || svc.Healthcheck.Test[0] == "NONE" {
			t.Errorf("service %s has no health check (and is not a one-shot job with restart: \"no\")", name)
		}
		if svc.Restart != "unless-stopped" && svc.Restart != "always" && svc.Restart != "on-failure" {
			t.Errorf("service %s: restart %q, want a policy that restarts it", name, svc.Restart)
		}
	}
}

// TestComposeStartOrder: each service waits for what it needs, by health or
// by completion, never merely by start.
func TestComposeStartOrder(t *testing.T) {
	s := loadStack(t)
	for _, name := range s.sortedNames() {
		for dep, d := range s.services[name].DependsOn {
			target, ok := s.services[dep]
			switch {
			case !ok:
				t.Errorf("service %s depends on %s, which does not exist", name, dep)
			case d.Condition == "service_healthy" && target.Healthcheck == nil:
				t.Errorf("service %s waits for %s to be healthy, which has no health check", name, dep)
			case d.Condition == "service_completed_successfully" && target.Restart != "no":
				t.Errorf("service %s waits for %s to complete, which is not a one-shot job", name, dep)
			case d.Condition != "service_healthy" && d.Condition != "service_completed_successfully":
				t.Errorf("service %s depends on %s with condition %q, want service_healthy or service_completed_successfully", name, dep, d.Condition)
			}
		}
	}
	want := map[string]string{
		"postgres": "service_healthy", "redis": "service_healthy",
		"migrate": "service_completed_successfully", "kafka-init": "service_completed_successfully",
	}
	for _, n := range kafkaNodes(s) {
		want[n] = "service_healthy"
	}
	apps := append(s.builtFrom("gateway/Dockerfile"), s.builtFrom("worker/Dockerfile")...)
	for _, name := range apps {
		for dep, cond := range want {
			if got := s.services[name].DependsOn[dep].Condition; got != cond {
				t.Errorf("service %s: depends_on %s: condition %q, want %q", name, dep, got, cond)
			}
		}
	}
	jobs := map[string]map[string]string{
		"migrate":          {"postgres": "service_healthy"},
		"postgres-replica": {"postgres": "service_healthy"},
		"kafka-init":       {},
	}
	for _, n := range kafkaNodes(s) {
		jobs["kafka-init"][n] = "service_healthy"
	}
	for name, deps := range jobs {
		for dep, cond := range deps {
			if got := s.services[name].DependsOn[dep].Condition; got != cond {
				t.Errorf("service %s: depends_on %s: condition %q, want %q", name, dep, got, cond)
			}
		}
	}
	for _, proxy := range s.builtFrom("compose/nginx/Dockerfile") {
		for _, gw := range s.builtFrom("gateway/Dockerfile") {
			if got := s.services[proxy].DependsOn[gw].Condition; got != "service_healthy" {
				t.Errorf("service %s: depends_on %s: condition %q, want service_healthy", proxy, gw, got)
			}
		}
	}
}

// TestComposeKafkaReplication: three combined KRaft nodes of one cluster,
// the messages topic replicated 3 times with min.insync.replicas=2.
func TestComposeKafkaReplication(t *testing.T) {
	s := loadStack(t)
	nodes := kafkaNodes(s)
	if len(nodes) != 3 {
		t.Fatalf("want 3 Kafka nodes, got %v", nodes)
	}
	var voters []string
	for _, n := range nodes {
		env := s.env(t, n)
		voters = append(voters, env["KAFKA_NODE_ID"]+"@"+n+":9093")
	}
	ids := map[string]bool{}
	first := s.env(t, nodes[0])
	for _, n := range nodes {
		env := s.env(t, n)
		for k, want := range map[string]string{
			"KAFKA_MIN_INSYNC_REPLICAS":                      "2",
			"KAFKA_DEFAULT_REPLICATION_FACTOR":               "3",
			"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":         "3",
			"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "3",
			"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR":            "2",
			"KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE":           "false",
			"KAFKA_ADVERTISED_LISTENERS":                     "PLAINTEXT://" + n + ":9092",
			"KAFKA_CONTROLLER_QUORUM_VOTERS":                 strings.Join(voters, ","),
			"CLUSTER_ID":                                     first["CLUSTER_ID"],
		} {
			if env[k] != want {
				t.Errorf("%s: %s=%q, want %q", n, k, env[k], want)
			}
		}
		if roles := strings.Split(env["KAFKA_PROCESS_ROLES"], ","); !slices.Contains(roles, "broker") || !slices.Contains(roles, "controller") {
			t.Errorf("%s: KAFKA_PROCESS_ROLES=%q, want broker,controller", n, env["KAFKA_PROCESS_ROLES"])
		}
		if ids[env["KAFKA_NODE_ID"]] {
			t.Errorf("%s: KAFKA_NODE_ID %s is not unique", n, env["KAFKA_NODE_ID"])
		}
		ids[env["KAFKA_NODE_ID"]] = true
	}
	if first["CLUSTER_ID"] == "" {
		t.Error("CLUSTER_ID is not set")
	}

	// The topic: created by kafka-init exactly as the binaries would.
	gw := s.env(t, s.builtFrom("gateway/Dockerfile")[0])
	if gw["KAFKA_REPLICATION"] != "3" {
		t.Errorf("gateway KAFKA_REPLICATION=%q, want 3", gw["KAFKA_REPLICATION"])
	}
	init, ok := s.services["kafka-init"]
	if !ok {
		t.Fatal("no kafka-init service")
	}
	flags := map[string][]string{}
	for i := 0; i+1 < len(init.Command); i++ {
		if strings.HasPrefix(init.Command[i], "--") && !strings.HasPrefix(init.Command[i+1], "--") {
			flags[init.Command[i]] = append(flags[init.Command[i]], init.Command[i+1])
		}
	}
	for flag, want := range map[string]string{
		"--topic":              gw["KAFKA_TOPIC"],
		"--partitions":         gw["KAFKA_PARTITIONS"],
		"--replication-factor": gw["KAFKA_REPLICATION"],
		"--bootstrap-server":   gw["KAFKA_BROKERS"],
	} {
		if got := strings.Join(flags[flag], " "); got != want {
			t.Errorf("kafka-init %s %q, want %q (the gateways' setting)", flag, got, want)
		}
	}
	if !slices.Contains(flags["--config"], "min.insync.replicas=2") {
		t.Errorf("kafka-init: want --config min.insync.replicas=2, got %v", flags["--config"])
	}
	if !slices.Contains(init.Command, "--create") || !slices.Contains(init.Command, "--if-not-exists") {
		t.Errorf("kafka-init: want --create --if-not-exists, got %v", init.Command)
	}
}

// TestComposeProxy: the proxy's configuration (the local stack's template
// rendered with the compose values) listens where compose publishes it and
// passes /api to the gateway service on the port the gateways listen on.
func TestComposeProxy(t *testing.T) {
	s := loadStack(t)
	proxies := s.builtFrom("compose/nginx/Dockerfile")
	gateways := s.builtFrom("gateway/Dockerfile")
	if len(proxies) != 1 || len(gateways) == 0 {
		t.Fatalf("want one proxy and the gateways, got %v and %v", proxies, gateways)
	}
	name := proxies[0]
	proxy := s.services[name]
	env := s.env(t, name)

	// The Dockerfile installs the template as the image's template.
	d := readDockerfile(t, "compose/nginx/Dockerfile")
	const tmplPath = "proxy/nginx.conf.template"
	if !regexp.MustCompile(`(?m)^COPY\s+` + regexp.QuoteMeta(tmplPath) + `\s+/etc/nginx/templates/nginx\.conf\.template\s*$`).MatchString(d.text) {
		t.Errorf("compose/nginx/Dockerfile does not install %s as /etc/nginx/templates/nginx.conf.template", tmplPath)
	}
	raw, err := os.ReadFile(filepath.Join(root, tmplPath))
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	conf := regexp.MustCompile(`\$\{(PROXY_[A-Z0-9_]+)\}`).ReplaceAllStringFunc(string(raw), func(m string) string {
		k := m[2 : len(m)-1]
		v, ok := env[k]
		if !ok && !used[k] {
			t.Errorf("%s uses %s, which service %s does not set", tmplPath, k, name)
		}
		used[k] = true
		return v
	})
	for k := range env {
		if strings.HasPrefix(k, "PROXY_") && !used[k] {
			t.Errorf("service %s sets %s, which %s does not use", name, k, tmplPath)
		}
	}

	// Published port = listen port = health check port.
	if len(proxy.Ports) != 1 {
		t.Fatalf("service %s: want one published port, got %v", name, proxy.Ports)
	}
	published, err := interpolate(proxy.Ports[0], s.example)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(published, ":")
	hostPortNum, containerPort := parts[len(parts)-2], parts[len(parts)-1]
	listens := regexp.MustCompile(`(?m)^\s*listen\s+([^;\s]+)[^;]*;`).FindAllStringSubmatch(conf, -1)
	if len(listens) != 1 {
		t.Fatalf("rendered proxy configuration: want one listen directive, got %v", listens)
	}
	if l := listens[0][1]; l != containerPort && !strings.HasSuffix(l, ":"+containerPort) {
		t.Errorf("proxy listens on %q but compose publishes container port %s", l, containerPort)
	}
	if hc := strings.Join(proxy.Healthcheck.Test, " "); !strings.Contains(hc, "127.0.0.1:"+containerPort+"/") {
		t.Errorf("proxy health check %q does not ask port %s", hc, containerPort)
	}

	// /api goes to the upstream, whose servers are the gateways on their
	// HTTP_ADDR port; the gateways' own health checks ask that port too.
	pass := regexp.MustCompile(`proxy_pass\s+http://([^/;\s]+)`).FindAllStringSubmatch(conf, -1)
	ups := regexp.MustCompile(`(?s)upstream\s+(\S+)\s*\{(.*?)\n\s*\}`).FindAllStringSubmatch(conf, -1)
	if len(pass) == 0 || len(ups) != 1 || pass[0][1] != ups[0][1] {
		t.Fatalf("rendered proxy configuration: want proxy_pass to the one upstream, got proxy_pass %v, upstreams %v", pass, ups)
	}
	// nginx refuses a directive given twice in an upstream (the template
	// and PROXY_UPSTREAMS both adding a zone, say).
	seen := map[string]bool{}
	block := regexp.MustCompile(`#[^\n]*`).ReplaceAllString(ups[0][2], "")
	for _, stmt := range strings.Split(block, ";") {
		if f := strings.Fields(stmt); len(f) > 0 && f[0] != "server" {
			if seen[f[0]] {
				t.Errorf("upstream %s: directive %q given twice", ups[0][1], f[0])
			}
			seen[f[0]] = true
		}
	}
	if servers := regexp.MustCompile(`\bserver\s+\S+[^;]*\bresolve\b`).FindString(block); servers != "" && !seen["zone"] {
		t.Errorf("upstream %s: a server with resolve needs a zone", ups[0][1])
	}
	servers := regexp.MustCompile(`(?:^|[;\s])server\s+([^\s;]+)`).FindAllStringSubmatch(ups[0][2], -1)
	if len(servers) == 0 {
		t.Fatalf("upstream %s has no server", ups[0][1])
	}
	for _, m := range servers {
		host, port := hostPort(t, "upstream server", m[1])
		if !slices.Contains(gateways, host) {
			t.Errorf("upstream server %s is not a gateway service (%v)", m[1], gateways)
			continue
		}
		_, httpPort := hostPort(t, host+": HTTP_ADDR", s.env(t, host)["HTTP_ADDR"])
		if port != httpPort {
			t.Errorf("upstream server %s, but %s listens on HTTP_ADDR port %d", m[1], host, httpPort)
		}
		if hc := strings.Join(s.services[host].Healthcheck.Test, " "); !strings.Contains(hc, "/"+strconv.Itoa(httpPort)) {
			t.Errorf("service %s: health check %q does not ask its HTTP_ADDR port %d", host, hc, httpPort)
		}
	}

	// Browsers load the app from the published port: its origin must be
	// allowed for WebSockets.
	for _, gw := range gateways {
		origins := strings.Split(s.env(t, gw)["ALLOWED_ORIGINS"], ",")
		if !slices.Contains(origins, "http://localhost:"+hostPortNum) {
			t.Errorf("service %s: ALLOWED_ORIGINS %v lacks the proxy's origin http://localhost:%s", gw, origins, hostPortNum)
		}
	}
}

// secretName matches settings that hold a secret.
var secretName = regexp.MustCompile(`(?i)(PASSWORD|SECRET|TOKEN|_AUTH$|^AUTH_|API_KEY|PRIVATE_KEY)`)

// TestComposeSecrets: no secret is written into compose.yaml; each is a
// required ${VAR:?} reference whose example value is in .env.example and
// marked as one to change, and compose/.env is not committed.
func TestComposeSecrets(t *testing.T) {
	s := loadStack(t)
	refs := map[string]bool{}
	for _, name := range s.sortedNames() {
		for k, v := range rawEnv(s.services[name]) {
			if secretName.MatchString(k) && !strings.HasPrefix(k, "AUTH_RATE") {
				ref, ok := requiredRef(v)
				if !ok {
					t.Errorf("service %s: %s=%q: a secret must be a ${VAR:?message} reference", name, k, v)
					continue
				}
				refs[ref] = true
			}
			if pw, ok := urlPassword(v); ok {
				ref, ok := requiredRef(pw)
				if !ok {
					t.Errorf("service %s: %s: the URL's password must be a ${VAR:?message} reference, got %q", name, k, pw)
					continue
				}
				refs[ref] = true
			}
		}
	}
	if len(refs) == 0 {
		t.Fatal("no secret references found")
	}
	for ref := range refs {
		v, ok := s.example[ref]
		if !ok {
			t.Errorf("secret %s is not in compose/.env.example", ref)
		} else if !strings.Contains(v, "change-me") {
			t.Errorf("compose/.env.example: %s=%q: mark example secrets with change-me", ref, v)
		}
	}
	for k := range s.example {
		if !strings.Contains(s.raw, "${"+k) {
			t.Errorf("compose/.env.example sets %s, which compose.yaml does not use", k)
		}
	}
	if strings.Contains(s.raw, "change-me") {
		t.Error("compose.yaml contains an example secret (change-me)")
	}
	ignore, err := os.ReadFile(filepath.Join(root, "compose/.gitignore"))
	if err != nil || !slices.Contains(strings.Fields(string(ignore)), ".env") {
		t.Errorf("compose/.gitignore must list .env (err %v)", err)
	}
}

// urlPassword returns the password of a URL as written in compose, where it
// may be a ${VAR:?message} reference containing ":" and "/" (so url.Parse
// cannot be used on the raw value).
func urlPassword(v string) (string, bool) {
	_, rest, ok := strings.Cut(v, "://")
	at := strings.LastIndex(rest, "@")
	if !ok || at < 0 {
		return "", false
	}
	_, pw, ok := strings.Cut(rest[:at], ":")
	return pw, ok
}

// TestComposePostgresReplica: the replica streams from the primary through
// the slot and with the role the primary's init script creates.
func TestComposePostgresReplica(t *testing.T) {
	s := loadStack(t)
	primary, replica := s.services["postgres"], s.services["postgres-replica"]
	if replica.Image != primary.Image {
		t.Errorf("replica image %q differs from the primary's %q", replica.Image, primary.Image)
	}
	const initScript = "./postgres/primary-init.sh:/docker-entrypoint-initdb.d/"
	if !slices.ContainsFunc(primary.Volumes, func(v string) bool { return strings.HasPrefix(v, initScript) }) {
		t.Errorf("the primary does not mount %s*", initScript)
	}
	script, err := os.ReadFile(filepath.Join(root, "compose/postgres/primary-init.sh"))
	if err != nil {
		t.Fatal(err)
	}
	env := s.env(t, "postgres-replica")
	if env["PRIMARY_HOST"] != "postgres" {
		t.Errorf("replica PRIMARY_HOST=%q, want postgres", env["PRIMARY_HOST"])
	}
	if !strings.Contains(string(script), "pg_create_physical_replication_slot('"+env["REPLICATION_SLOT"]+"')") {
		t.Errorf("primary-init.sh does not create the replica's slot %q", env["REPLICATION_SLOT"])
	}
	if p, r := rawEnv(primary)["REPLICATION_PASSWORD"], rawEnv(replica)["REPLICATION_PASSWORD"]; p != r || p == "" {
		t.Errorf("REPLICATION_PASSWORD differs: primary %q, replica %q", p, r)
	}
	if !slices.Contains(primary.Command, "wal_level=replica") {
		t.Errorf("primary command %v lacks wal_level=replica", primary.Command)
	}
}
