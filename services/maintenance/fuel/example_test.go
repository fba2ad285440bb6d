package fuel_test

import (
	"fmt"
	"time"

	"github.com/fleetwire/fleetwire/services/maintenance/fuel"
)

// A tank narrower at the bottom: the sensor's raw value is not proportional to litres.
func ExampleProfile_Litres() {
	p, err := fuel.Profile{CapacityL: 200, Calibration: []fuel.CalPoint{
		{Raw: 0, Litres: 0}, {Raw: 1000, Litres: 40}, {Raw: 4095, Litres: 200},
	}}.Normalize()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%.1f L\n", p.Litres(500))
	fmt.Printf("%.1f L\n", p.Litres(5000)) // beyond the table: clamped, never extrapolated
	// Output:
	// 20.0 L
	// 200.0 L
}

// A parked vehicle loses 40 L in ten minutes with the engine off: one suspected drain,
// reported once its new level is measured.
func ExampleDetector() {
	var st fuel.State
	d := fuel.NewDetector(fuel.DefaultConfig(), fuel.Profile{CapacityL: 200}, &st)
	t := time.Date(2026, 1, 10, 2, 0, 0, 0, time.UTC)
	level := 150.0
	for i := range 60 {
		if i >= 20 && i < 30 {
			level -= 4
		}
		events, _ := d.Add(fuel.Reading{Time: t.Add(time.Duration(i) * time.Minute), Level: level, HasLevel: true})
		for _, e := range events {
			fmt.Printf("%s %.0f L at %s\n", e.Kind, e.Litres, e.Start.Format("15:04"))
		}
	}
	// Output:
	// fuel_drain 40 L at 02:19
}
