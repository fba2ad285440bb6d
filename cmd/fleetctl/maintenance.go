package main

// Maintenance and fuel (MaintenanceService): plans, the due list, the service book,
// fault codes, a vehicle's health, fuel reports and tank profiles.

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

func init() {
	register(
		command{name: "plans", args: "[list] [--vehicle V] [--group G] | add NAME ... | delete ID | group G VEHICLE...", summary: "maintenance plans: list, add, delete; set a group's vehicles in the registry", run: runPlans},
		command{name: "due", args: "[--vehicle V] [--group G] [--horizon-km K] [--horizon-days D] [--horizon-hours H] [--state S]", summary: "plans overdue, due soon or due within a horizon, most urgent first", run: runDue},
		command{name: "services", args: "[list] VEHICLE [--plan P] | record VEHICLE ...", summary: "a vehicle's service book; record a service", run: runServices},
		command{name: "faults", args: "VEHICLE [--active]", summary: "a vehicle's fault codes, active first", run: runFaults},
		command{name: "health", args: "VEHICLE", summary: "a vehicle's condition: plans, faults, readings", run: runHealth},
		command{name: "fuel", args: "[report] (VEHICLE | --group G) [--from T] [--to T] | profile VEHICLE ...", summary: "fuel report (consumption, refuels, suspected drains); set a tank profile", run: runFuel},
	)
}

func renderPlans(e *env, plans []*fleetv1.MaintenancePlan) error {
	if e.json() {
		for _, p := range plans {
			if err := e.emit(p); err != nil {
				return err
			}
		}
		return nil
	}
	every := func(v float64, unit string) string {
		if v <= 0 {
			return "-"
		}
		return num(v, 0) + " " + unit
	}
	t := e.table("PLAN", "NAME", "APPLIES TO", "EVERY KM", "EVERY HOURS", "EVERY DAYS", "ITEMS", "CREATED")
	for _, p := range plans {
		to := p.GetVehicleId()
		if p.GetGroupId() != "" {
			to = "group:" + p.GetGroupId()
		}
		t.row(p.GetPlanId(), p.GetName(), to, every(p.GetEveryKm(), "km"), every(p.GetEveryEngineHours(), "h"), every(p.GetEveryDays(), "d"),
			joinOrDash(p.GetItems()), e.when(p.GetCreateTime()))
	}
	return t.flush()
}

func runPlans(ctx context.Context, e *env, args []string) error {
	client := fleetv1.NewMaintenanceServiceClient(e.conn)
	return e.dispatch(ctx, args, []sub{
		{name: "list", args: "[--vehicle V] [--group G]", summary: "plans, optionally only those applying to a vehicle or a group (also: fleetctl plans)",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				vehicle := fs.String("vehicle", "", "only plans applying to this vehicle (directly or through a group)")
				group := fs.String("group", "", "only plans of this group")
				if _, err := e.noPos(fs, args); err != nil {
					return err
				}
				resp, err := client.ListPlans(ctx, &fleetv1.ListPlansRequest{VehicleId: *vehicle, GroupId: *group})
				if err != nil {
					return err
				}
				return renderPlans(e, resp.GetPlans())
			}},
		{name: "add", args: "NAME (--vehicle V | --group G) [--every-km K] [--every-hours H] [--every-days D] [--item I]... [--id ID]",
			summary: "create (or replace, with --id) a plan: due every K km, H engine hours or D days, whichever comes first",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				p := &fleetv1.MaintenancePlan{}
				fs.StringVar(&p.PlanId, "id", "", "plan id (default: generated)")
				fs.StringVar(&p.VehicleId, "vehicle", "", "the vehicle it applies to")
				fs.StringVar(&p.GroupId, "group", "", "the maintenance group it applies to (plans group)")
				fs.Float64Var(&p.EveryKm, "every-km", 0, "distance interval in km")
				fs.Float64Var(&p.EveryEngineHours, "every-hours", 0, "engine-hours interval")
				fs.Float64Var(&p.EveryDays, "every-days", 0, "calendar interval in days")
				fs.Float64Var(&p.DueSoonKm, "due-soon-km", 0, "due-soon margin in km (default 10 % of the interval)")
				fs.Float64Var(&p.DueSoonDays, "due-soon-days", 0, "due-soon margin in days (default 10 % of the interval)")
				fs.Float64Var(&p.DueSoonEngineHours, "due-soon-hours", 0, "due-soon margin in engine hours (default 10 % of the interval)")
				var items multiFlag
				fs.Var(&items, "item", "what a service comprises, e.g. \"oil filter\" (repeatable)")
				pos, err := e.parse(fs, args)
				if err != nil {
					return err
				}
				if len(pos) != 1 {
					return usageErr("one plan name (quote it when it has spaces)")
				}
				p.Name, p.Items = pos[0], items
				resp, err := client.CreatePlan(ctx, &fleetv1.CreatePlanRequest{Plan: p})
				if err != nil {
					return err
				}
				return renderPlans(e, []*fleetv1.MaintenancePlan{resp.GetPlan()})
			}},
		{name: "delete", args: "ID", summary: "delete a plan",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				pos, err := e.parse(fs, args)
				if err != nil {
					return err
				}
				if len(pos) != 1 {
					return usageErr("one plan id")
				}
				if _, err := client.DeletePlan(ctx, &fleetv1.DeletePlanRequest{PlanId: pos[0]}); err != nil {
					return err
				}
				fmt.Fprintf(e.stderr, "plan %s deleted\n", pos[0])
				return nil
			}},
		{name: "group", args: "GROUP VEHICLE...", summary: "put exactly these vehicles in a registry group (the one group model plans, fuel reports, zones and tokens share)",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				pos, err := e.parse(fs, args)
				if err != nil {
					return err
				}
				if len(pos) < 1 {
					return usageErr("a group and its vehicles")
				}
				n, err := setGroupMembers(ctx, fleetv1.NewTrackingServiceClient(e.conn), pos[0], pos[1:])
				if err != nil {
					return err
				}
				if e.json() {
					fmt.Fprintf(e.out(), "{\"group\":%q,\"vehicles\":%d}\n", pos[0], n)
					return nil
				}
				fmt.Fprintf(e.out(), "group %s: %d vehicles\n", pos[0], n)
				return nil
			}},
	}, "list")
}

var planStatusHeader = []string{"VEHICLE", "PLAN", "NAME", "STATE", "KM LEFT", "HOURS LEFT", "DAYS LEFT", "DUE", "LAST SERVICE"}

func planStatusCells(e *env, s *fleetv1.PlanStatus) []string {
	return []string{s.GetVehicleId(), s.GetPlanId(), s.GetPlanName(), enumName(s.GetState().String(), "PLAN_STATE_"),
		optNum(s.RemainingKm, 0), optNum(s.RemainingEngineHours, 0), optNum(s.RemainingDays, 1), e.when(s.GetDueTime()), e.when(s.GetLastServiceTime())}
}

func renderDue(e *env, items []*fleetv1.PlanStatus) error {
	if e.json() {
		for _, s := range items {
			if err := e.emit(s); err != nil {
				return err
			}
		}
		return nil
	}
	t := e.table(planStatusHeader...)
	for _, s := range items {
		t.row(planStatusCells(e, s)...)
	}
	return t.flush()
}

func runDue(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet()
	req := &fleetv1.ListDueRequest{}
	fs.StringVar(&req.VehicleId, "vehicle", "", "only this vehicle")
	fs.StringVar(&req.GroupId, "group", "", "only vehicles of this maintenance group")
	fs.Float64Var(&req.HorizonKm, "horizon-km", 0, "also plans due within this many km")
	fs.Float64Var(&req.HorizonDays, "horizon-days", 0, "also plans due within this many days")
	fs.Float64Var(&req.HorizonEngineHours, "horizon-hours", 0, "also plans due within this many engine hours")
	state := fs.String("state", "", "only these states, comma-separated ("+enumNames(fleetv1.PlanState_value, "PLAN_STATE_")+"; default due_soon and overdue)")
	limit := fs.Int("limit", 1000, "most entries")
	if _, err := e.noPos(fs, args); err != nil {
		return err
	}
	if *state != "" {
		for _, s := range strings.Split(*state, ",") {
			v, ok := enumValue(fleetv1.PlanState_value, "PLAN_STATE_", strings.TrimSpace(s))
			if !ok {
				return usageErr("unknown state %q (%s)", s, enumNames(fleetv1.PlanState_value, "PLAN_STATE_"))
			}
			req.States = append(req.States, fleetv1.PlanState(v))
		}
	}
	req.Limit = int32(*limit)
	resp, err := fleetv1.NewMaintenanceServiceClient(e.conn).ListDue(ctx, req)
	if err != nil {
		return err
	}
	return renderDue(e, resp.GetItems())
}

func renderServices(e *env, resp *fleetv1.ListServiceLogResponse) error {
	if e.json() {
		for _, s := range resp.GetServices() {
			if err := e.emit(s); err != nil {
				return err
			}
		}
		return nil
	}
	t := e.table("SERVICE", "TIME", "PLAN", "ODO KM", "HOURS", "ITEMS", "COST", "NOTES")
	for _, s := range resp.GetServices() {
		var items []string
		for _, it := range s.GetItems() {
			items = append(items, it.GetName())
		}
		t.row(s.GetServiceId(), e.when(s.GetServiceTime()), orDash(s.GetPlanId()), optNum(s.OdometerKm, 0), optNum(s.EngineHours, 0),
			joinOrDash(items), strings.TrimSpace(num(s.GetCost(), 2)+" "+s.GetCurrency()), orDash(s.GetNotes()))
	}
	if err := t.flush(); err != nil {
		return err
	}
	if e.format == "table" {
		fmt.Fprintf(e.out(), "%d services, total cost %s\n", len(resp.GetServices()), num(resp.GetTotalCost(), 2))
	}
	return nil
}

// itemFlag reads --item "oil filter:12.50".
type itemFlag []*fleetv1.ServiceItem

func (f *itemFlag) String() string { return "" }
func (f *itemFlag) Set(v string) error {
	name, cost, hasCost := strings.Cut(v, ":")
	it := &fleetv1.ServiceItem{Name: strings.TrimSpace(name)}
	if hasCost {
		c, err := strconv.ParseFloat(strings.TrimSpace(cost), 64)
		if err != nil {
			return fmt.Errorf("item %q: cost %q is not a number", v, cost)
		}
		it.Cost = c
	}
	*f = append(*f, it)
	return nil
}

func runServices(ctx context.Context, e *env, args []string) error {
	client := fleetv1.NewMaintenanceServiceClient(e.conn)
	return e.dispatch(ctx, args, []sub{
		{name: "list", args: "VEHICLE [--plan P]", summary: "the service book, newest first (also: fleetctl services VEHICLE)",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				plan := fs.String("plan", "", "only services under this plan")
				pos, err := e.parse(fs, args)
				if err != nil {
					return err
				}
				if len(pos) != 1 {
					return usageErr("one vehicle id")
				}
				resp, err := client.ListServiceLog(ctx, &fleetv1.ListServiceLogRequest{VehicleId: pos[0], PlanId: *plan})
				if err != nil {
					return err
				}
				return renderServices(e, resp)
			}},
		{name: "record", args: "VEHICLE [--plan P] [--time T] [--odometer KM] [--hours H] [--item NAME[:COST]]... [--cost C] [--currency EUR] [--notes N]",
			summary: "write a service into the book; with --plan the plan's interval restarts here",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				s := &fleetv1.ServiceRecord{}
				fs.StringVar(&s.PlanId, "plan", "", "the plan this service fulfils")
				fs.StringVar(&s.ServiceId, "id", "", "service id (default: generated; the same id twice is stored once)")
				when := e.timeVar(fs, "time", time.Time{}, "when it was done (default now)")
				odo := fs.Float64("odometer", -1, "odometer in km at the service (default: the last known)")
				hours := fs.Float64("hours", -1, "engine hours at the service (default: the last known)")
				var items itemFlag
				fs.Var(&items, "item", "a line of the service, NAME or NAME:COST (repeatable)")
				fs.Float64Var(&s.Cost, "cost", 0, "total cost (default: the sum of the lines)")
				fs.StringVar(&s.Currency, "currency", "", "ISO 4217 currency of the costs")
				fs.StringVar(&s.Notes, "notes", "", "free text")
				pos, err := e.parse(fs, args)
				if err != nil {
					return err
				}
				if len(pos) != 1 {
					return usageErr("one vehicle id")
				}
				s.VehicleId, s.Items = pos[0], items
				if when.set {
					s.ServiceTime = timestamppb.New(*when.t)
				}
				if *odo >= 0 {
					s.OdometerKm = odo
				}
				if *hours >= 0 {
					s.EngineHours = hours
				}
				resp, err := client.RecordService(ctx, &fleetv1.RecordServiceRequest{Service: s})
				if err != nil {
					return err
				}
				if e.json() {
					return e.emit(resp)
				}
				if err := renderServices(e, &fleetv1.ListServiceLogResponse{Services: []*fleetv1.ServiceRecord{resp.GetService()}, TotalCost: resp.GetService().GetCost()}); err != nil {
					return err
				}
				if st := resp.GetStatus(); st != nil && e.format == "table" {
					fmt.Fprintf(e.out(), "plan %s is now %s\n", st.GetPlanId(), enumName(st.GetState().String(), "PLAN_STATE_"))
				}
				return nil
			}},
	}, "list")
}

func renderFaults(e *env, faults []*fleetv1.FaultCode) error {
	if e.json() {
		for _, f := range faults {
			if err := e.emit(f); err != nil {
				return err
			}
		}
		return nil
	}
	t := e.table("CODE", "SEVERITY", "ACTIVE", "DESCRIPTION", "FIRST SEEN", "LAST SEEN", "CLEARED", "N")
	for _, f := range faults {
		t.row(f.GetCode(), enumName(f.GetSeverity().String(), "FAULT_SEVERITY_"), strconv.FormatBool(f.GetActive()), f.GetDescription(),
			e.when(f.GetFirstSeenTime()), e.when(f.GetLastSeenTime()), e.when(f.GetClearedTime()), strconv.Itoa(int(f.GetOccurrences())))
	}
	return t.flush()
}

func runFaults(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet()
	active := fs.Bool("active", false, "only codes the vehicle reports now")
	pos, err := e.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErr("one vehicle id")
	}
	resp, err := fleetv1.NewMaintenanceServiceClient(e.conn).ListFaultCodes(ctx, &fleetv1.ListFaultCodesRequest{VehicleId: pos[0], ActiveOnly: *active})
	if err != nil {
		return err
	}
	return renderFaults(e, resp.GetFaults())
}

func runHealth(ctx context.Context, e *env, args []string) error {
	pos, err := e.noFlags(args, 1, 1)
	if err != nil {
		return err
	}
	resp, err := fleetv1.NewMaintenanceServiceClient(e.conn).GetVehicleHealth(ctx, &fleetv1.GetVehicleHealthRequest{VehicleId: pos[0]})
	if err != nil {
		return err
	}
	h := resp.GetHealth()
	if e.json() {
		return e.emit(h)
	}
	onOff := func(b *bool) string {
		if b == nil {
			return "-"
		}
		return map[bool]string{true: "on", false: "off"}[*b]
	}
	if err := e.fields([][2]string{
		{"vehicle", h.GetVehicleId()}, {"last record", e.when(h.GetLastRecordTime())},
		{"odometer km", num(h.GetOdometerM()/1000, 1)}, {"engine hours", num(h.GetEngineHours(), 1)},
		{"ignition", onOff(h.Ignition)}, {"mil", onOff(h.Mil)}, {"fuel l", optNum(h.FuelLevelL, 1)},
		{"external voltage v", optNum(h.ExternalVoltageV, 1)}, {"battery voltage v", optNum(h.BatteryVoltageV, 2)},
		{"coolant °C", optNum(h.CoolantTempC, 0)}, {"rpm", optNum(h.Rpm, 0)},
		{"active fault codes", joinOrDash(h.GetActiveFaultCodes())}, {"active alerts", joinOrDash(h.GetActiveAlerts())},
	}); err != nil {
		return err
	}
	if len(h.GetPlans()) > 0 && e.format == "table" {
		fmt.Fprintln(e.out())
		return renderDue(e, h.GetPlans())
	}
	return nil
}

var fuelHeader = []string{"VEHICLE", "START L", "END L", "REFUELLED L", "DRAINED L", "CONSUMED L", "KM", "L/100KM", "IDLE L", "IDLE H", "REFUELS", "DRAINS"}

func fuelCells(r *fleetv1.FuelReport, name string) []string {
	if !r.GetHasData() {
		return []string{name, "-", "-", "-", "-", "-", num(r.GetDistanceKm(), 1), "-", "-", "-", "0", "0"}
	}
	return []string{name, num(r.GetStartLevelL(), 1), num(r.GetEndLevelL(), 1), num(r.GetRefuelledL(), 1), num(r.GetDrainedL(), 1),
		num(r.GetConsumedL(), 1), num(r.GetDistanceKm(), 1), num(r.GetLitresPer_100Km(), 1), num(r.GetIdleLitres(), 1), num(r.GetIdleHours(), 1),
		strconv.Itoa(len(r.GetRefuels())), strconv.Itoa(len(r.GetDrains()))}
}

func renderFuel(e *env, resp *fleetv1.GetFuelReportResponse) error {
	if e.json() {
		return e.emit(resp)
	}
	t := e.table(fuelHeader...)
	for _, r := range resp.GetReports() {
		t.row(fuelCells(r, r.GetVehicleId())...)
	}
	if tot := resp.GetTotal(); tot != nil && len(resp.GetReports()) > 1 {
		t.row(fuelCells(tot, "TOTAL")...)
	}
	if err := t.flush(); err != nil {
		return err
	}
	if e.format != "table" || !hasFuelEvents(resp) {
		return nil
	}
	fmt.Fprintln(e.out())
	return renderFuelEvents(e, resp)
}

func hasFuelEvents(resp *fleetv1.GetFuelReportResponse) bool {
	for _, r := range resp.GetReports() {
		if len(r.GetRefuels())+len(r.GetDrains()) > 0 {
			return true
		}
	}
	return false
}

// renderFuelEvents lists every refuel and drain of the report, one per row.
func renderFuelEvents(e *env, resp *fleetv1.GetFuelReportResponse) error {
	var lines []*fleetv1.FuelEventLine
	var owners []string
	for _, r := range resp.GetReports() {
		for _, l := range append(append([]*fleetv1.FuelEventLine(nil), r.GetRefuels()...), r.GetDrains()...) {
			lines, owners = append(lines, l), append(owners, r.GetVehicleId())
		}
	}
	if e.json() {
		for i, l := range lines {
			b, err := protojson.Marshal(l)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.out(), "{\"vehicle_id\":%q,\"event\":%s}\n", owners[i], b)
		}
		return nil
	}
	ev := e.table("VEHICLE", "EVENT", "START", "END", "LITRES", "BEFORE L", "AFTER L", "CONFIDENCE", "POSITION")
	for i, l := range lines {
		ev.row(owners[i], enumName(l.GetKind().String(), "FUEL_EVENT_KIND_"), e.when(l.GetStartTime()), e.when(l.GetEndTime()), num(l.GetLitres(), 1),
			num(l.GetLevelBeforeL(), 1), num(l.GetLevelAfterL(), 1), optNum(l.Confidence, 2), pos(l.GetPosition()))
	}
	return ev.flush()
}

func runFuel(ctx context.Context, e *env, args []string) error {
	client := fleetv1.NewMaintenanceServiceClient(e.conn)
	return e.dispatch(ctx, args, []sub{
		{name: "report", args: "(VEHICLE | --group G) [--from T] [--to T] [--events]", summary: "fuel over a period: levels, consumption, refuels and suspected drains (also: fleetctl fuel VEHICLE)",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				group := fs.String("group", "", "every vehicle of this registry group, with a total")
				events := fs.Bool("events", false, "only the refuels and drains, one per row (with -o csv: the fuel events export)")
				from, to := e.period(fs)
				pos, err := e.parse(fs, args)
				if err != nil {
					return err
				}
				req := &fleetv1.GetFuelReportRequest{GroupId: *group, FromTime: from.ts(), ToTime: to.ts()}
				switch {
				case len(pos) == 1 && *group == "":
					req.VehicleId = pos[0]
				case len(pos) == 0 && *group != "":
				default:
					return usageErr("one vehicle, or --group G")
				}
				resp, err := client.GetFuelReport(ctx, req)
				if err != nil {
					return err
				}
				if *events {
					return renderFuelEvents(e, resp)
				}
				return renderFuel(e, resp)
			}},
		{name: "profile", args: "VEHICLE --capacity L [--calibration RAW:L,RAW:L...] [--sensor-key K] [--step L] [--lag S]", summary: "set a vehicle's tank: capacity and, for raw sensors, a calibration table",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				p := &fleetv1.FuelProfile{}
				fs.Float64Var(&p.TankCapacityL, "capacity", 0, "tank capacity in litres")
				cal := fs.String("calibration", "", "raw sensor value to litres, RAW:LITRES pairs separated by commas")
				fs.StringVar(&p.SensorIoKey, "sensor-key", "", "IO element with the raw value (default fuel_raw)")
				fs.Float64Var(&p.SensorStepL, "step", 0, "sensor resolution in litres per step (0 = unknown)")
				fs.Float64Var(&p.SensorLagS, "lag", 0, "sensor response time constant in seconds (0 = unknown)")
				pos, err := e.parse(fs, args)
				if err != nil {
					return err
				}
				if len(pos) != 1 {
					return usageErr("one vehicle id")
				}
				p.VehicleId = pos[0]
				if *cal != "" {
					for _, pair := range strings.Split(*cal, ",") {
						r, l, ok := strings.Cut(pair, ":")
						rv, err1 := strconv.ParseFloat(strings.TrimSpace(r), 64)
						lv, err2 := strconv.ParseFloat(strings.TrimSpace(l), 64)
						if !ok || err1 != nil || err2 != nil {
							return usageErr("--calibration %q: want RAW:LITRES pairs", pair)
						}
						p.Calibration = append(p.Calibration, &fleetv1.CalibrationPoint{Raw: rv, Litres: lv})
					}
				}
				resp, err := client.SetFuelProfile(ctx, &fleetv1.SetFuelProfileRequest{Profile: p})
				if err != nil {
					return err
				}
				if e.json() {
					return e.emit(resp.GetProfile())
				}
				fmt.Fprintf(e.out(), "fuel profile of %s: %s L tank, %d calibration points\n", pos[0], num(resp.GetProfile().GetTankCapacityL(), 1), len(resp.GetProfile().GetCalibration()))
				return nil
			}},
	}, "report")
}
