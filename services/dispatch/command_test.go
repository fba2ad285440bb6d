package dispatch

import (
	"strings"
	"testing"
	"time"
)

func TestGateDecide(t *testing.T) {
	g := Gate{ImmobilizeMaxKmh: 5, ImmobilizeSlowFixes: 3, ImmobilizeSlowFor: 20 * time.Second, OfflineAfter: 10 * time.Minute}
	now := t0.Add(time.Hour)
	cmd := func(k CommandKind, expire time.Time) *Command {
		return &Command{Kind: k, State: CommandQueued, ExpireTime: expire}
	}
	// fixes builds a vehicle whose newest fixes had these speeds, 10 s apart, oldest first.
	fixes := func(speeds ...float64) *VehicleState {
		v := &VehicleState{LastReceived: now.Add(-time.Minute), HasFix: true}
		for i, sp := range speeds {
			v.RecentFixes = append(v.RecentFixes, FixSample{Time: now.Add(time.Duration(i-len(speeds)) * 10 * time.Second), SpeedKmh: sp, Good: true})
		}
		return v
	}
	online := func(speed float64) *VehicleState { return fixes(speed, speed, speed) }
	lostFix := online(0)
	lostFix.GNSSLost = true
	poorFix := fixes(0, 0, 0)
	poorFix.RecentFixes[1].Good = false
	for _, tc := range []struct {
		name   string
		c      *Command
		v      *VehicleState
		known  bool
		want   Decision
		reason string
	}{
		{"online resume", cmd(CommandResume, now.Add(time.Hour)), online(80), true, Send, ""},
		{"immobilize at speed waits", cmd(CommandImmobilize, now.Add(time.Hour)), online(42), true, Wait, "waiting for speed <= 5 km/h (now 42 km/h)"},
		{"immobilize at the limit on three fixes over 20 s goes", cmd(CommandImmobilize, now.Add(time.Hour)), online(5), true, Send, ""},
		{"one forged speed-0 fix after driving waits", cmd(CommandImmobilize, now.Add(time.Hour)), fixes(26, 27, 26, 0), true, Wait, "3 consecutive good fixes over 20s (1 so far"},
		{"two slow fixes wait", cmd(CommandImmobilize, now.Add(time.Hour)), fixes(26, 3, 0), true, Wait, "(2 so far"},
		{"three slow fixes within 20 s wait", cmd(CommandImmobilize, now.Add(time.Hour)), &VehicleState{LastReceived: now, HasFix: true, RecentFixes: []FixSample{
			{Time: now.Add(-4 * time.Second), Good: true}, {Time: now.Add(-2 * time.Second), Good: true}, {Time: now, Good: true}}}, true, Wait, "over 4s"},
		{"a poor fix breaks the run", cmd(CommandImmobilize, now.Add(time.Hour)), poorFix, true, Wait, "(1 so far"},
		{"immobilize without a current fix waits", cmd(CommandImmobilize, now.Add(time.Hour)), lostFix, true, Wait, "valid GNSS fix"},
		{"immobilize never had a fix", cmd(CommandImmobilize, now.Add(time.Hour)), &VehicleState{LastReceived: now}, true, Wait, "valid GNSS fix"},
		{"resume without a fix goes", cmd(CommandResume, now.Add(time.Hour)), lostFix, true, Send, ""},
		{"never seen", cmd(CommandLocateNow, now.Add(time.Hour)), &VehicleState{}, false, Wait, "never seen"},
		{"offline", cmd(CommandLocateNow, now.Add(time.Hour)), &VehicleState{LastReceived: now.Add(-11 * time.Minute)}, true, Wait, "offline since"},
		{"expired beats everything", cmd(CommandResume, now), online(0), true, Expire, "expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, reason := g.Decide(tc.c, tc.v, tc.known, now)
			if got != tc.want || !strings.Contains(reason, tc.reason) {
				t.Fatalf("got %d %q, want %d containing %q", got, reason, tc.want, tc.reason)
			}
		})
	}
}

func TestReplyDetailKeepsTheDevicesSpeed(t *testing.T) {
	imm := &Command{Kind: CommandImmobilize}
	for _, tc := range []struct {
		name string
		c    *Command
		r    Reply
		want string
	}{
		{"executed slow", imm, Reply{Status: CommandExecuted, Detail: "engine cut", SpeedKmh: 0, HasSpeed: true}, "engine cut; device speed 0 km/h"},
		{"rejected fast", imm, Reply{Status: CommandRejected, Detail: "speed 26 km/h above 5 km/h", SpeedKmh: 26, HasSpeed: true}, "speed 26 km/h above 5 km/h; device speed 26 km/h"},
		{"executed fast", imm, Reply{Status: CommandExecuted, SpeedKmh: 30, HasSpeed: true}, "device speed 30 km/h ABOVE the 5 km/h limit"},
		{"no speed", imm, Reply{Status: CommandAccepted}, "device did not confirm its speed"},
		{"other kinds as they are", &Command{Kind: CommandLocateNow}, Reply{Status: CommandExecuted, Detail: "done"}, "done"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := replyDetail(tc.c, &tc.r, 5); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestApplyReply(t *testing.T) {
	for _, tc := range []struct {
		from, reply CommandState
		changed     bool
		want        CommandState
	}{
		{CommandSent, CommandAccepted, true, CommandAccepted},
		{CommandSent, CommandExecuted, true, CommandExecuted},
		{CommandAccepted, CommandExecuted, true, CommandExecuted},
		{CommandAccepted, CommandRejected, true, CommandRejected},
		{CommandFailed, CommandExecuted, true, CommandExecuted}, // late, but it happened
		{CommandExecuted, CommandAccepted, false, CommandExecuted},
		{CommandExecuted, CommandExecuted, false, CommandExecuted},
		{CommandQueued, CommandExecuted, false, CommandQueued}, // never sent: not ours
		{CommandExpired, CommandExecuted, false, CommandExpired},
		{CommandSent, CommandFailed, false, CommandSent}, // not a reply status
	} {
		c := &Command{State: tc.from}
		if got := ApplyReply(c, tc.reply, "", t0); got != tc.changed || c.State != tc.want {
			t.Errorf("%s + reply %s: got changed %v state %s, want %v %s", tc.from, tc.reply, got, c.State, tc.changed, tc.want)
		}
	}
}

func TestTimeouts(t *testing.T) {
	to := Timeouts{Reply: time.Minute, Execute: 10 * time.Minute}
	for _, tc := range []struct {
		c    Command
		want bool
	}{
		{Command{State: CommandSent, SentTime: t0}, false},
		{Command{State: CommandSent, SentTime: t0.Add(-2 * time.Minute)}, true},
		{Command{State: CommandAccepted, UpdateTime: t0.Add(-5 * time.Minute)}, false},
		{Command{State: CommandAccepted, UpdateTime: t0.Add(-11 * time.Minute)}, true},
		{Command{State: CommandQueued, UpdateTime: t0.Add(-time.Hour)}, false},
	} {
		if got := to.Overdue(&tc.c, t0) != ""; got != tc.want {
			t.Errorf("%s: got overdue %v, want %v", tc.c.State, got, tc.want)
		}
	}
}

func TestValidateParams(t *testing.T) {
	for _, tc := range []struct {
		k      CommandKind
		params map[string]string
		ok     bool
	}{
		{CommandImmobilize, nil, true},
		{CommandImmobilize, map[string]string{"x": "1"}, false},
		{CommandSetReportInterval, map[string]string{"moving_s": "10", "parked_s": "600"}, true},
		{CommandSetReportInterval, nil, false},
		{CommandSetReportInterval, map[string]string{"moving_s": "0"}, false},
		{CommandSetReportInterval, map[string]string{"moving_s": "ten"}, false},
		{CommandSetReportInterval, map[string]string{"speed": "10"}, false},
		{CommandUnspecified, nil, false},
		{CommandKind(99), nil, false},
	} {
		if err := ValidateParams(tc.k, tc.params); (err == nil) != tc.ok {
			t.Errorf("%s %v: got %v, want ok=%v", tc.k, tc.params, err, tc.ok)
		}
	}
}
