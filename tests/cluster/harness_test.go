package cluster

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

// freePort asks the kernel for a free loopback port; the test keeps using it across
// restarts of the server it gives it to.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// buildBinaries builds the services and the simulator into dir, with the race detector
// when the test has it.
func buildBinaries(t *testing.T, dir string) {
	t.Helper()
	root, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatalf("module root: %v", err)
	}
	args := []string{"build", "-o", dir + "/"}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/tracking", "./cmd/geofence", "./cmd/maintenance", "./cmd/dispatch", "./cmd/fleetsim")
	cmd := exec.Command("go", args...)
	cmd.Dir = strings.TrimSpace(string(root))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
}

// redisServer is a redis-server process the test owns: AOF on, its own directory, so
// it can be restarted with its data or without.
type redisServer struct {
	t    *testing.T
	port int
	dir  string
	cmd  *exec.Cmd
}

func startRedis(t *testing.T) *redisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		msg := "REDIS-SERVER NOT INSTALLED: the fault-injection suite is SKIPPED (apt-get install redis-server); FLEETWIRE_REQUIRE_REDIS=1 makes this a failure"
		if redistest.Required() {
			t.Fatal(msg)
		}
		fmt.Fprintln(os.Stderr, "\n*** "+msg+" ***")
		t.Skip(msg)
	}
	r := &redisServer{t: t, port: freePort(t), dir: t.TempDir()}
	r.start()
	t.Cleanup(func() { r.kill() })
	return r
}

func (r *redisServer) url() string { return "redis://127.0.0.1:" + strconv.Itoa(r.port) }

func (r *redisServer) start() {
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

func (r *redisServer) kill() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
		r.cmd = nil
	}
}

// restart stops Redis and starts it again; keep says whether its data survives.
func (r *redisServer) restart(keep bool) {
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

// proc is a service or simulator process, restarted by the test as a supervisor would:
// one that exits on its own (a start that failed while NATS or Redis was down, say) is
// started again after a second, as a deployment's restart policy does, and the exit is
// logged with the process's last output and counted.
type proc struct {
	t    *testing.T
	name string
	bin  string
	args []string
	env  []string
	log  *lockedBuffer

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{} // closed when cmd has exited
	stopped  bool          // the test stopped it for good: no restart
	exits    int           // exits the test did not cause
	supervis bool          // restart on an exit the test did not cause
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

func (p *proc) start() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.startLocked()
}

func (p *proc) startLocked() {
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	fmt.Fprintf(p.log, "=== start %s\n", time.Now().Format(time.RFC3339Nano))
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		p.t.Errorf("%s: %v", p.name, err)
		return
	}
	done := make(chan struct{})
	p.cmd, p.done, p.stopped = cmd, done, false
	go func() {
		err := cmd.Wait()
		close(done)
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.cmd != cmd || p.stopped || !p.supervis {
			return // the test killed or stopped it
		}
		p.exits++
		fmt.Fprintf(p.log, "=== exited on its own %s: %v\n", time.Now().Format(time.RFC3339Nano), err)
		p.t.Logf("%s exited on its own (%v); restarting it. Last output:\n%s", p.name, err, tailOf(p.log.String(), 3000))
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

func (p *proc) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
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
	fmt.Fprintf(p.log, "=== killed %s\n", time.Now().Format(time.RFC3339Nano))
}

// stop sends SIGTERM and waits up to grace before killing.
func (p *proc) stop(grace time.Duration) {
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

func (p *proc) restart() {
	p.kill()
	p.start()
}

func tailOf(s string, n int) string {
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return s
}

// tail returns the last n bytes of the process's output, for failure reports.
func (p *proc) tail(n int) string { return tailOf(p.log.String(), n) }

// client is a client of the test's Redis, closed when the test ends.
func (r *redisServer) client(t *testing.T) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(r.port)})
	t.Cleanup(func() { c.Close() })
	return c
}

// exited is how often the process exited without the test causing it.
func (p *proc) exited() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exits
}
