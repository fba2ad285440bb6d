// Package faulttest is what the process-level suites (tests/chaos, tests/cluster) share:
// the harness that builds the real binaries and runs them, a Redis and the simulator as
// processes the test kills, freezes and restarts, and the ground truth that replays the
// telemetry stream through the services' own pure engines and compares what must exist
// with what the services stored, per vehicle: every item exactly once and in order.
package faulttest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fleetwire/fleetwire/pkg/redistest"
)

// FreePort asks the kernel for a free loopback port; the test keeps using it across
// restarts of the server it gives it to.
func FreePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// BuildBinaries builds the services and the simulator into dir, with the race detector
// when the test has it.
func BuildBinaries(t *testing.T, dir string) {
	t.Helper()
	root, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatalf("module root: %v", err)
	}
	args := []string{"build", "-o", dir + "/"}
	if RaceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/tracking", "./cmd/geofence", "./cmd/maintenance", "./cmd/dispatch", "./cmd/fleetsim")
	cmd := exec.Command("go", args...)
	cmd.Dir = strings.TrimSpace(string(root))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
}

// Redis is a redis-server process the test owns: AOF on, its own directory, so it can be
// restarted with its data or without.
type Redis struct {
	t    *testing.T
	port int
	dir  string
	cmd  *exec.Cmd
}

// StartRedis starts a Redis the test owns, killed when the test ends. Without
// redis-server installed the test is skipped loudly (failed with FLEETWIRE_REQUIRE_REDIS=1).
func StartRedis(t *testing.T) *Redis {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		msg := "REDIS-SERVER NOT INSTALLED: the fault-injection suite is SKIPPED (apt-get install redis-server); FLEETWIRE_REQUIRE_REDIS=1 makes this a failure"
		if redistest.Required() {
			t.Fatal(msg)
		}
		fmt.Fprintln(os.Stderr, "\n*** "+msg+" ***")
		t.Skip(msg)
	}
	r := &Redis{t: t, port: FreePort(t), dir: t.TempDir()}
	r.start()
	t.Cleanup(func() { r.kill() })
	return r
}

// URL is the Redis URL the services are given.
func (r *Redis) URL() string { return "redis://127.0.0.1:" + strconv.Itoa(r.port) }

func (r *Redis) start() {
	r.t.Helper()
	r.cmd = exec.Command("redis-server", "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--dir", r.dir,
		"--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no")
	r.cmd.Stdout, r.cmd.Stderr = io.Discard, io.Discard
	if err := r.cmd.Start(); err != nil {
		r.t.Fatalf("redis-server: %v", err)
	}
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(r.port)})
	defer c.Close()
	// A bound only against a server that never comes up, not a speed verdict.
	deadline := time.Now().Add(2 * time.Minute)
	for c.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			r.t.Fatal("redis-server not answering after 2 minutes")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *Redis) kill() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
		r.cmd = nil
	}
}

// Restart stops Redis and starts it again; keep says whether its data survives.
func (r *Redis) Restart(keep bool) {
	r.t.Helper()
	if keep {
		_ = r.cmd.Process.Signal(syscall.SIGTERM) // SHUTDOWN: the AOF is complete
		_ = r.cmd.Wait()
		r.cmd = nil
	} else {
		r.kill()
		entries, _ := os.ReadDir(r.dir)
		for _, e := range entries {
			_ = os.RemoveAll(filepath.Join(r.dir, e.Name()))
		}
	}
	r.start()
}

// Client is a client of the test's Redis, closed when the test ends.
func (r *Redis) Client(t *testing.T) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(r.port)})
	t.Cleanup(func() { c.Close() })
	return c
}

// Proc is a service or simulator process, restarted by the test as a supervisor would:
// with Supervise, one that exits on its own (a start that failed while NATS or Redis was
// down, say) is started again after a second, as a deployment's restart policy does, and
// the exit is logged with the process's last output and counted.
type Proc struct {
	T         *testing.T
	Name      string
	Bin       string
	Args      []string
	Env       []string // added to the test's environment; read at every start
	Supervise bool     // restart on an exit the test did not cause
	// LogDir, when set, keeps the whole output of every run of the process in
	// <LogDir>/<Name>.log (a goroutine dump after SIGQUIT, say), beside the tails the
	// test prints.
	LogDir string

	log     lockedBuffer
	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has exited
	stopped bool          // the test stopped it for good: no restart
	exits   int           // exits the test did not cause
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Start starts the process.
func (p *Proc) Start() {
	p.T.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.startLocked()
}

func (p *Proc) startLocked() {
	cmd := exec.Command(p.Bin, p.Args...)
	cmd.Env = append(os.Environ(), p.Env...)
	fmt.Fprintf(&p.log, "=== start %s\n", time.Now().Format(time.RFC3339Nano))
	cmd.Stdout, cmd.Stderr = &p.log, &p.log
	var full *os.File
	if p.LogDir != "" {
		f, err := os.OpenFile(filepath.Join(p.LogDir, p.Name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			p.T.Errorf("%s: %v", p.Name, err)
		} else {
			full = f
			w := io.MultiWriter(&p.log, f)
			cmd.Stdout, cmd.Stderr = w, w
		}
	}
	if err := cmd.Start(); err != nil {
		p.T.Errorf("%s: %v", p.Name, err)
		if full != nil {
			full.Close()
		}
		return
	}
	done := make(chan struct{})
	p.cmd, p.done, p.stopped = cmd, done, false
	go func() {
		err := cmd.Wait()
		if full != nil {
			full.Close()
		}
		close(done)
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.cmd != cmd || p.stopped || !p.Supervise {
			return // the test killed or stopped it
		}
		p.exits++
		fmt.Fprintf(&p.log, "=== exited on its own %s: %v\n", time.Now().Format(time.RFC3339Nano), err)
		p.T.Logf("%s exited on its own (%v); restarting it. Last output:\n%s", p.Name, err, tailOf(p.log.String(), 3000))
		p.cmd = nil
		time.AfterFunc(time.Second, func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.cmd == nil && !p.stopped {
				p.startLocked()
			}
		})
	}()
}

// Signal sends sig to the running process, if any (SIGSTOP and SIGCONT freeze and thaw it).
func (p *Proc) Signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Proc) Kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd, p.stopped = nil, true
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT) // a stopped process cannot be reaped otherwise
	_ = cmd.Process.Kill()
	<-done
	fmt.Fprintf(&p.log, "=== killed %s\n", time.Now().Format(time.RFC3339Nano))
}

// Stop sends SIGTERM and waits up to grace before killing.
func (p *Proc) Stop(grace time.Duration) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd, p.stopped = nil, true
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Restart kills the process (SIGKILL) and starts it again.
func (p *Proc) Restart() {
	p.Kill()
	p.Start()
}

func tailOf(s string, n int) string {
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return s
}

// Output is everything the process has written so far, over all its runs.
func (p *Proc) Output() string { return p.log.String() }

// Tail returns the last n bytes of the process's output, for failure reports.
func (p *Proc) Tail(n int) string { return tailOf(p.log.String(), n) }

// Exited is how often the process exited without the test causing it.
func (p *Proc) Exited() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exits
}
