package main

// Browser tests of the web console: a real headless Chromium (Debian's chromium package)
// driven over the DevTools protocol, against the all-in-one with the simulator feeding it.
// Without a Chromium they are skipped loudly; FLEETWIRE_REQUIRE_BROWSER=1 (CI) turns the
// skip into a failure. UPDATE_SCREENSHOTS=1 writes the screenshots into docs/.

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/fleetwire/fleetwire/cmd/internal/launch"
	"github.com/fleetwire/fleetwire/pkg/bus"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// chromium finds the browser, or skips (fails under FLEETWIRE_REQUIRE_BROWSER=1).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "CHROMIUM NOT AVAILABLE: browser tests of the web console skipped (apt-get install chromium)"
	if os.Getenv("FLEETWIRE_REQUIRE_BROWSER") == "1" {
		t.Fatal(msg + "; FLEETWIRE_REQUIRE_BROWSER=1 requires it")
	}
	fmt.Fprintln(os.Stderr, msg)
	t.Skip(msg)
	return ""
}

// browser starts a headless Chromium with a fresh profile and returns its allocator.
func browser(t *testing.T, width, height int) context.Context {
	t.Helper()
	path := chromium(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
	}
	ctx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	return ctx
}

// tab opens a tab: a new browser from an allocator, another tab of the same browser from
// a tab. Each tab is its own session (the token lives in per-tab session storage).
func tab(t *testing.T, parent context.Context) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(parent)
	t.Cleanup(cancel)
	// The first run starts the browser (or the tab) and must not carry a timeout.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("browser: %v", err)
	}
	return ctx
}

func run(t *testing.T, ctx context.Context, timeout time.Duration, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := chromedp.Do(c, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// js runs a JavaScript statement (its value is discarded).
func js(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Evaluate[bool]("("+expr+", true)")(ctx, tg)
		return err
	})
}

// waitJS polls a JavaScript expression until it is truthy.
func waitJS(t *testing.T, ctx context.Context, timeout time.Duration, what, expr string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("!!("+expr+")"))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %q never held (last error: %v)", what, expr, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(c, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

func signIn(t *testing.T, ctx context.Context, url, token, role string) {
	t.Helper()
	run(t, ctx, 60*time.Second, "sign in as "+role,
		chromedp.Navigate(url),
		chromedp.WaitVisible(chromedp.ID(`#token`)),
		chromedp.SendKeys(chromedp.ID(`#token`), token),
		chromedp.Click(chromedp.ID(`#signin-btn`)),
		chromedp.WaitVisible(chromedp.CSS(`body.signed-in #map`)),
	)
	waitJS(t, ctx, 30*time.Second, "role shown", fmt.Sprintf(`document.querySelector('#who').textContent.includes('(%s')`, role))
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if os.Getenv("UPDATE_SCREENSHOTS") != "1" {
		return
	}
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	buf, err := chromedp.Run(c, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("..", "..", "docs", name), buf, 0o644); err != nil {
		t.Fatal(err)
	}
}

// clickAt clicks the page at container point (x, y) of the map.
func clickMap(t *testing.T, ctx context.Context, x, y float64) {
	t.Helper()
	r := eval[[]float64](t, ctx, `(() => { const b = document.querySelector('#map').getBoundingClientRect(); return [b.left, b.top]; })()`)
	run(t, ctx, 10*time.Second, "click map", chromedp.MouseClickXY(r[0]+x, r[1]+y))
}

func startConsole(t *testing.T, sim int) *launch.Platform {
	t.Helper()
	o := launch.Options{
		NATS:         bus.Config{URL: bus.Embedded, ListenPort: -1},
		RedisURL:     "memory",
		GRPCAddr:     "127.0.0.1:0",
		ConsoleAddr:  "127.0.0.1:0",
		ConsoleTiles: "none", // tests run offline: the map draws on its plain background
		DataDir:      t.TempDir(),
		Ephemeral:    true,
		Sim:          sim,
		SimSeed:      5,
		Grace:        2 * time.Second,
	}
	o.Streams.MemoryStorage = true
	p, err := launch.Start(context.Background(), o, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	if p.ConsoleURL == "" {
		t.Fatal("no console URL")
	}
	return p
}

func token(t *testing.T, p *launch.Platform, name string, role fleetv1.Role) string {
	t.Helper()
	conn, err := p.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := fleetv1.NewTokenServiceClient(conn).CreateToken(ctx, &fleetv1.CreateTokenRequest{Name: name, Role: role})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetSecret()
}

// TestConsoleInBrowser walks the console's core through a real browser: sign-in, the live
// map, a vehicle's panel and track playback, a zone drawn on the map and its events, an
// acknowledgement seen by a second session, and a viewer who cannot immobilise.
func TestConsoleInBrowser(t *testing.T) {
	alloc := browser(t, 1400, 900)
	p := startConsole(t, 40)
	dispatcher := token(t, p, "dana", fleetv1.Role_ROLE_DISPATCHER)
	viewer := token(t, p, "vic", fleetv1.Role_ROLE_VIEWER)
	conn, err := p.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	admin := tab(t, alloc)
	t.Run("sign-in", func(t *testing.T) {
		// A wrong token is refused with the server's reason.
		run(t, admin, 60*time.Second, "bad token",
			chromedp.Navigate(p.ConsoleURL),
			chromedp.WaitVisible(chromedp.ID(`#token`)),
			chromedp.SendKeys(chromedp.ID(`#token`), "not-a-token"),
			chromedp.Click(chromedp.ID(`#signin-btn`)),
		)
		waitJS(t, admin, 20*time.Second, "refusal shown", `document.querySelector('#signin-error').textContent.includes('refused')`)
		signIn(t, admin, p.ConsoleURL, p.AdminToken, "admin")
	})

	t.Run("vehicles appear and move", func(t *testing.T) {
		waitJS(t, admin, 60*time.Second, "every simulated vehicle listed", `window.fleetwire.vehicles.size >= 40 && document.querySelectorAll('#vehicle-list li.veh-item').length >= 40`)
		waitJS(t, admin, 60*time.Second, "vehicles drawn", `window.fleetwire.layer.positions.size > 0`)
		before := eval[map[string][]float64](t, admin, `Object.fromEntries([...window.fleetwire.layer.vehicles.values()].map(v => [v.id, [v.lat, v.lon]]))`)
		deadline := time.Now().Add(60 * time.Second)
		for {
			after := eval[map[string][]float64](t, admin, `Object.fromEntries([...window.fleetwire.layer.vehicles.values()].map(v => [v.id, [v.lat, v.lon]]))`)
			moved := 0
			for id, a := range after {
				if b, ok := before[id]; ok && (a[0] != b[0] || a[1] != b[1]) {
					moved++
				}
			}
			if moved > 0 {
				t.Logf("%d of %d vehicles moved on the map", moved, len(after))
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("no vehicle moved on the map in 60 s")
			}
			time.Sleep(time.Second)
		}
		screenshot(t, admin, "console-map.png")
	})

	var picked string
	t.Run("panel and playback", func(t *testing.T) {
		// Zoom in on a moving vehicle and click its arrow.
		picked = eval[string](t, admin, `(() => { const m = [...window.fleetwire.layer.vehicles.values()].find(v => v.status === 'VEHICLE_STATUS_MOVING') || [...window.fleetwire.layer.vehicles.values()][0]; window.fleetwire.map.setView([m.lat, m.lon], 15, {animate: false}); return m.id; })()`)
		waitJS(t, admin, 20*time.Second, "picked vehicle drawn", fmt.Sprintf(`window.fleetwire.layer.positions.has(%q)`, picked))
		time.Sleep(300 * time.Millisecond)
		// The vehicle moves at 1 Hz and another may pass over it between reading its
		// position and the click: click where it is now, and again from its position read
		// afresh while the panel has not opened on it.
		panelOn := fmt.Sprintf(`!document.querySelector('#panel').hidden && document.querySelector('#panel-title').textContent === %q`, picked)
		opened := false
		for attempt := 0; attempt < 5 && !opened; attempt++ {
			xy := eval[[]float64](t, admin, fmt.Sprintf(`(() => { const v = window.fleetwire.layer.vehicles.get(%q); const p = window.fleetwire.map.latLngToContainerPoint([v.lat, v.lon]); return [p.x, p.y]; })()`, picked))
			clickMap(t, admin, xy[0], xy[1])
			for wait := 0; wait < 20 && !opened; wait++ {
				opened = eval[bool](t, admin, "!!("+panelOn+")")
				if !opened {
					time.Sleep(250 * time.Millisecond)
				}
			}
		}
		if !opened {
			t.Fatalf("clicking %s on the map did not open its panel in 5 tries (panel shows %q)", picked,
				eval[string](t, admin, `document.querySelector('#panel').hidden ? '' : document.querySelector('#panel-title').textContent`))
		}
		waitJS(t, admin, 20*time.Second, "live values", `document.querySelector('#live-speed') && document.querySelector('#live-speed').textContent.includes('km/h') && document.querySelector('#live-odometer')`)
		// Let some history accumulate, then play it back.
		time.Sleep(3 * time.Second)
		run(t, admin, 10*time.Second, "load track", chromedp.Click(chromedp.ID(`#track-load`)))
		waitJS(t, admin, 30*time.Second, "track drawn", `Number(document.querySelector('#panel').dataset.trackFixes) >= 2 && document.querySelector('path.track-line')`)
		startText := eval[string](t, admin, `document.querySelector('#play-time').textContent`)
		run(t, admin, 10*time.Second, "play", chromedp.Click(chromedp.ID(`#play`)))
		waitJS(t, admin, 30*time.Second, "playback advances", fmt.Sprintf(`document.querySelector('#play-time').textContent !== %q`, startText))
		screenshot(t, admin, "console-panel.png")
	})

	t.Run("immobilize needs a typed confirmation", func(t *testing.T) {
		run(t, admin, 10*time.Second, "immobilize button", chromedp.Click(chromedp.CSS(`#cmd-buttons button[data-cmd=IMMOBILIZE]`)))
		waitJS(t, admin, 10*time.Second, "dialog open", `document.querySelector('#confirm').open && document.querySelector('#confirm-ok').disabled`)
		run(t, admin, 10*time.Second, "type wrong id", chromedp.SendKeys(chromedp.ID(`#confirm-input`), "nope"))
		if !eval[bool](t, admin, `document.querySelector('#confirm-ok').disabled`) {
			t.Fatal("a wrong vehicle id enabled the send button")
		}
		run(t, admin, 10*time.Second, "cancel", js(`document.querySelector('#confirm').close('cancel')`))
	})

	var zoneID string
	t.Run("draw a zone, see its events", func(t *testing.T) {
		run(t, admin, 10*time.Second, "zones tab",
			js(`window.fleetwire.map.setView([52.52, 13.405], 11, {animate: false})`),
			chromedp.Click(chromedp.CSS(`#side nav button[data-tab=zones]`)),
			chromedp.Click(chromedp.ID(`#draw-polygon`)),
		)
		size := eval[[]float64](t, admin, `(() => { const s = window.fleetwire.map.getSize(); return [s.x, s.y]; })()`)
		cx, cy := size[0]/2, size[1]/2
		for _, d := range [][2]float64{{-160, -140}, {160, -140}, {160, 140}, {-160, 140}} {
			clickMap(t, admin, cx+d[0], cy+d[1])
		}
		run(t, admin, 20*time.Second, "finish and save",
			chromedp.Click(chromedp.ID(`#draw-finish`)),
			chromedp.WaitVisible(chromedp.ID(`#zone-name`)),
			chromedp.SendKeys(chromedp.ID(`#zone-name`), "Drawn in the browser"),
			chromedp.Click(chromedp.ID(`#zone-save`)),
		)
		// The API lists it, as a polygon.
		deadline := time.Now().Add(20 * time.Second)
		for zoneID == "" {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			r, err := fleetv1.NewGeofenceServiceClient(conn).ListZones(ctx, &fleetv1.ListZonesRequest{})
			cancel()
			if err == nil {
				for _, z := range r.GetZones() {
					if z.GetName() == "Drawn in the browser" {
						if z.GetShape() != "Polygon" {
							t.Fatalf("drawn zone has shape %q, want Polygon", z.GetShape())
						}
						zoneID = z.GetZoneId()
					}
				}
			}
			if zoneID == "" && time.Now().After(deadline) {
				t.Fatalf("the drawn zone is not listed by the API (last error %v)", err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		waitJS(t, admin, 20*time.Second, "zone listed in the console", fmt.Sprintf(`document.querySelector('#zone-list li[data-zone=%q]')`, zoneID))
		run(t, admin, 10*time.Second, "alerts tab", chromedp.Click(chromedp.CSS(`#side nav button[data-tab=alerts]`)))
		waitJS(t, admin, 120*time.Second, "a vehicle entering the zone shows in the feed",
			fmt.Sprintf(`document.querySelector('#zone-events li.zone-event[data-zone=%q][data-kind=enter]')`, zoneID))
		screenshot(t, admin, "console-zone.png")
	})

	t.Run("acknowledgement seen by a second session", func(t *testing.T) {
		// The zone raises alerts on enter (the console's default for a drawn zone).
		waitJS(t, admin, 120*time.Second, "zone alert in the feed", `document.querySelector('#feed li.alert-item[data-state=ALERT_STATE_OPEN]')`)
		second := tab(t, admin)
		signIn(t, second, p.ConsoleURL, dispatcher, "dispatcher")
		run(t, second, 10*time.Second, "second session's feed",
			chromedp.Click(chromedp.CSS(`#side nav button[data-tab=alerts]`)),
			chromedp.SetValue(chromedp.ID(`#alert-state`), ""),
			js(`document.querySelector('#alert-state').dispatchEvent(new Event('change'))`),
		)
		id := eval[string](t, admin, `document.querySelector('#feed li.alert-item[data-state=ALERT_STATE_OPEN]').dataset.id`)
		waitJS(t, second, 30*time.Second, "second session sees the alert open", fmt.Sprintf(`document.querySelector('#feed li.alert-item[data-id="%s"][data-state=ALERT_STATE_OPEN]')`, id))
		run(t, admin, 10*time.Second, "acknowledge",
			chromedp.SendKeys(chromedp.ID(`#alert-note`), "driver called"),
			// A click in the page: the feed may re-render between a node lookup and a mouse click.
			js(fmt.Sprintf(`document.querySelector('#feed li.alert-item[data-id="%s"] button.ack').click()`, id)),
		)
		alertID, err := strconv.ParseUint(id, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			r, err := fleetv1.NewAlertServiceClient(conn).ListAlerts(context.Background(), &fleetv1.ListAlertsRequest{State: fleetv1.AlertState_ALERT_STATE_ACKNOWLEDGED, PageSize: 1000})
			if err == nil && slices.ContainsFunc(r.GetAlerts(), func(a *fleetv1.Alert) bool {
				return a.GetAlertId() == alertID && a.GetAcknowledgedBy() == "admin" && a.GetAcknowledgeNote() == "driver called"
			}) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("alert %d not acknowledged by the console's admin with the note (last error %v)", alertID, err)
			}
		}
		waitJS(t, second, 30*time.Second, "second session sees the acknowledgement",
			fmt.Sprintf(`(() => { const li = document.querySelector('#feed li.alert-item[data-id="%s"]'); return li && li.dataset.state === 'ALERT_STATE_ACKNOWLEDGED' && li.textContent.includes('driver called'); })()`, id))
		screenshot(t, second, "console-alerts.png")
	})

	t.Run("viewer cannot immobilize", func(t *testing.T) {
		v := tab(t, admin)
		signIn(t, v, p.ConsoleURL, viewer, "viewer")
		waitJS(t, v, 60*time.Second, "fleet loaded", `window.fleetwire.vehicles.size >= 40`)
		run(t, v, 10*time.Second, "open panel", js(fmt.Sprintf(`window.fleetwire.flyTo(%q)`, picked)))
		waitJS(t, v, 20*time.Second, "panel open", `!document.querySelector('#panel').hidden && document.querySelector('#cmd-buttons')`)
		if n := eval[int](t, v, `document.querySelectorAll('#cmd-buttons button').length`); n != 0 {
			t.Fatalf("a viewer sees %d command buttons", n)
		}
		if eval[bool](t, v, `!!document.querySelector('#draw-polygon') && document.querySelector('#draw-polygon').offsetParent !== null`) {
			t.Fatal("a viewer sees the zone drawing tools")
		}
		// The server refuses the call too, whatever the page shows.
		code := eval[string](t, v, fmt.Sprintf(`import('/js/api.js').then(api => api.call('CommandService', 'SendCommand', {vehicleId: %q, kind: 'COMMAND_KIND_IMMOBILIZE'}).then(() => 'sent', e => e.code))`, picked))
		if code != "permission_denied" {
			t.Fatalf("viewer's IMMOBILIZE: %q, want permission_denied", code)
		}
		cmds, err := fleetv1.NewCommandServiceClient(conn).ListCommands(context.Background(), &fleetv1.ListCommandsRequest{VehicleId: picked})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cmds.GetCommands() {
			if c.GetKind() == fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE {
				t.Fatalf("an IMMOBILIZE was recorded: %v", c)
			}
		}
	})
}
