package maintenance

import (
	_ "embed"
	"encoding/csv"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// Severity grades a fault code.
type Severity int

const (
	SeverityUnknown Severity = iota
	SeverityLow
	SeverityMedium
	SeverityHigh
	SeverityCritical
)

func (s Severity) String() string {
	switch s {
	case SeverityLow:
		return "low"
	case SeverityMedium:
		return "medium"
	case SeverityHigh:
		return "high"
	case SeverityCritical:
		return "critical"
	}
	return "unknown"
}

func parseSeverity(s string) (Severity, error) {
	for v := SeverityLow; v <= SeverityCritical; v++ {
		if v.String() == s {
			return v, nil
		}
	}
	return SeverityUnknown, fmt.Errorf("severity %q", s)
}

//go:embed data/dtc_generic.csv
var dtcTableCSV string

type dtcInfo struct {
	desc string
	sev  Severity
}

// dtcTable holds the shipped descriptions of common generic (SAE J2012) codes, parsed
// once; New reports a broken table (TestDTCTable keeps it from shipping broken).
var (
	dtcTable     map[string]dtcInfo
	dtcTableErr  error
	dtcTableOnce sync.Once
)

func loadDTCTable() error {
	dtcTableOnce.Do(func() { dtcTable, dtcTableErr = parseDTCTable(dtcTableCSV) })
	return dtcTableErr
}

func parseDTCTable(data string) (map[string]dtcInfo, error) {
	rows, err := csv.NewReader(strings.NewReader(data)).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("dtc table: %w", err)
	}
	out := make(map[string]dtcInfo, len(rows))
	for i, r := range rows {
		if i == 0 {
			continue // header
		}
		if len(r) != 3 {
			return nil, fmt.Errorf("dtc table line %d: %d fields", i+1, len(r))
		}
		code, ok := normalizeDTC(r[0])
		if !ok {
			return nil, fmt.Errorf("dtc table line %d: code %q", i+1, r[0])
		}
		sev, err := parseSeverity(r[1])
		if err != nil {
			return nil, fmt.Errorf("dtc table line %d: %w", i+1, err)
		}
		out[code] = dtcInfo{desc: r[2], sev: sev}
	}
	return out, nil
}

// MaxDTCLen bounds a fault code kept in a non-standard form.
const MaxDTCLen = 16

// ErrInvalidDTC marks a fault code that cannot be kept at all (empty, too long, or
// holding control or non-ASCII characters).
var ErrInvalidDTC = errors.New("invalid fault code")

// normalizeDTC returns the standard form of a code ("P0301") and whether raw has it:
// a system letter (P powertrain, C chassis, B body, U network), a digit 0–3 and three
// hexadecimal digits, in any case, surrounding blanks ignored.
func normalizeDTC(raw string) (string, bool) {
	c := strings.ToUpper(strings.TrimSpace(raw))
	if len(c) != 5 {
		return c, false
	}
	switch c[0] {
	case 'P', 'C', 'B', 'U':
	default:
		return c, false
	}
	if c[1] < '0' || c[1] > '3' {
		return c, false
	}
	for i := 2; i < 5; i++ {
		if !(c[i] >= '0' && c[i] <= '9' || c[i] >= 'A' && c[i] <= 'F') {
			return c, false
		}
	}
	return c, true
}

// ParseDTC applies the fault-code rule: a code in the standard OBD-II form is kept
// normalised (standard=true); anything else of 1..16 printable ASCII characters is kept
// as sent, upper-cased, with standard=false (a fault is still a fault; it is counted as
// "dtc_unknown_format"); anything else is refused with ErrInvalidDTC.
func ParseDTC(raw string) (code string, standard bool, err error) {
	c, ok := normalizeDTC(raw)
	if ok {
		return c, true, nil
	}
	if c == "" || len(c) > MaxDTCLen {
		return "", false, fmt.Errorf("%w: length %d", ErrInvalidDTC, len(c))
	}
	for i := 0; i < len(c); i++ {
		if c[i] < 0x21 || c[i] > 0x7e {
			return "", false, fmt.Errorf("%w: byte %#x", ErrInvalidDTC, c[i])
		}
	}
	return c, false, nil
}

var dtcSystems = map[byte]string{'P': "Powertrain", 'C': "Chassis", 'B': "Body", 'U': "Network"}

// DescribeDTC returns the description and severity of a code: from the shipped table
// for the common generic codes; otherwise a generic text by system, severity medium for
// powertrain, chassis and network codes and low for body codes.
func DescribeDTC(code string, standard bool) (string, Severity) {
	if !standard {
		return "Fault code in a non-standard format", SeverityUnknown
	}
	_ = loadDTCTable()
	if info, ok := dtcTable[code]; ok {
		return info.desc, info.sev
	}
	kind := "generic"
	if code[1] == '1' || code[1] == '3' {
		kind = "manufacturer-specific"
	}
	sev := SeverityMedium
	if code[0] == 'B' {
		sev = SeverityLow
	}
	return fmt.Sprintf("%s fault code (%s, not in the shipped table)", dtcSystems[code[0]], kind), sev
}

// FaultCode is one diagnostic trouble code of a vehicle and its lifecycle.
type FaultCode struct {
	Code        string    `json:"code"`
	Description string    `json:"description"`
	Severity    Severity  `json:"severity"`
	Standard    bool      `json:"standard"`
	Active      bool      `json:"active"`
	FirstSeen   time.Time `json:"first_seen"`
	LastSeen    time.Time `json:"last_seen"`
	Cleared     time.Time `json:"cleared,omitzero"`
	Occurrences int       `json:"occurrences"`
}

// MaxFaultCodes bounds the codes remembered per vehicle; beyond it the longest-cleared
// code is forgotten.
const MaxFaultCodes = 64

// dtcChange is what applying a diagnostics report did to one code.
type dtcChange struct {
	code *FaultCode
	new  bool // appeared (first time, or again after clearing)
}

// applyDTCs applies one diagnostics report at time t: codes reported are active (new
// ones and reappearing ones are returned), active codes not reported are cleared.
func applyDTCs(codes map[string]*FaultCode, reported []string, t time.Time) []dtcChange {
	var out []dtcChange
	seen := make(map[string]bool, len(reported))
	for _, c := range reported {
		if seen[c] {
			continue
		}
		seen[c] = true
	}
	for _, c := range sortedKeys(seen) {
		fc := codes[c]
		if fc == nil {
			_, standard, _ := ParseDTC(c)
			desc, sev := DescribeDTC(c, standard)
			fc = &FaultCode{Code: c, Description: desc, Severity: sev, Standard: standard, FirstSeen: t}
			codes[c] = fc
		}
		if !fc.Active {
			fc.Active = true
			fc.Occurrences++
			fc.Cleared = time.Time{}
			out = append(out, dtcChange{code: fc, new: true})
		}
		fc.LastSeen = t
	}
	for c, fc := range codes {
		if fc.Active && !seen[c] {
			fc.Active = false
			fc.Cleared = t
		}
	}
	for len(codes) > MaxFaultCodes {
		var oldest string
		for c, fc := range codes {
			if !fc.Active && (oldest == "" || fc.Cleared.Before(codes[oldest].Cleared)) {
				oldest = c
			}
		}
		if oldest == "" {
			break
		}
		delete(codes, oldest)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
