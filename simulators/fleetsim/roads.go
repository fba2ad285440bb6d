package fleetsim

import (
	"math"
	"math/rand/v2"
)

// Road types with their typical free-flow speeds.
type roadKind uint8

const (
	roadResidential roadKind = iota
	roadStreet
	roadArterial
	roadRing
	roadMotorway
	roadRamp
)

// Speeds in m/s per road kind: 30, 50, 60, 80, 110, 50 km/h.
var roadSpeed = [...]float64{30 / 3.6, 50 / 3.6, 60 / 3.6, 80 / 3.6, 110 / 3.6, 50 / 3.6}

// Network layout, in metres from the centre.
const (
	gridSpacing   = 400.0
	gridHalf      = 15 // grid lines from -15..15: ±6 km
	arterialEvery = 5
	ringRadius    = 5000.0
	ringNodes     = 40
	motorwayLen   = 24000.0
	motorwayStep  = 2000.0
	// ZoneRadiusM is the radius of the service area: every road except the motorways
	// leaving the city lies within it. The must-stay zone of the leave-zone incident.
	ZoneRadiusM = 9500.0
)

type edge struct {
	to     int32
	kind   roadKind
	tunnel bool
	length float64 // metres
}

type node struct {
	x, y  float64 // metres east / north of the centre
	edges []edge
	grid  bool // a grid intersection (destinations are chosen among these)
}

// roads is the generated network. It is read-only after generation and shared by all
// vehicles; routing scratch space belongs to the Sim.
type roads struct {
	nodes     []node
	gridNodes []int32 // destinations
	depots    []int32
	stations  []int32 // fuel stations
	exits     []int32 // far ends of the motorways, outside the service area
}

func gridIndex(i, j int) int32 { return int32((i+gridHalf)*(2*gridHalf+1) + (j + gridHalf)) }

func lineKind(k int) roadKind {
	switch {
	case k%arterialEvery == 0:
		return roadArterial
	case k%2 == 0:
		return roadStreet
	default:
		return roadResidential
	}
}

// newRoads generates a network from rng: a jittered grid of streets with arterials every
// 2 km, a ring road (with two tunnels) linked to the grid by ramps, and four motorways
// leaving the city.
func newRoads(rng *rand.Rand) *roads {
	r := &roads{}
	n := 2*gridHalf + 1
	r.nodes = make([]node, 0, n*n+ringNodes+4*int(motorwayLen/motorwayStep))
	for i := -gridHalf; i <= gridHalf; i++ {
		for j := -gridHalf; j <= gridHalf; j++ {
			jx, jy := (rng.Float64()-0.5)*60, (rng.Float64()-0.5)*60
			if i%arterialEvery == 0 {
				jx = 0 // arterials run straight
			}
			if j%arterialEvery == 0 {
				jy = 0
			}
			r.nodes = append(r.nodes, node{x: float64(i)*gridSpacing + jx, y: float64(j)*gridSpacing + jy, grid: true})
			r.gridNodes = append(r.gridNodes, int32(len(r.nodes)-1))
		}
	}
	for i := -gridHalf; i <= gridHalf; i++ {
		for j := -gridHalf; j <= gridHalf; j++ {
			a := gridIndex(i, j)
			if i < gridHalf { // east along row j
				r.link(a, gridIndex(i+1, j), lineKind(j), false)
			}
			if j < gridHalf { // north along column i
				r.link(a, gridIndex(i, j+1), lineKind(i), false)
			}
		}
	}
	// Ring road with ramps to the nearest grid intersection.
	first := int32(len(r.nodes))
	tunnel1, tunnel2 := rng.IntN(ringNodes), rng.IntN(ringNodes)
	for k := 0; k < ringNodes; k++ {
		θ := 2 * math.Pi * float64(k) / ringNodes
		r.nodes = append(r.nodes, node{x: ringRadius * math.Cos(θ), y: ringRadius * math.Sin(θ)})
	}
	for k := 0; k < ringNodes; k++ {
		a, b := first+int32(k), first+int32((k+1)%ringNodes)
		r.link(a, b, roadRing, k == tunnel1 || k == tunnel2)
		gi := int(math.Round(r.nodes[a].x / gridSpacing))
		gj := int(math.Round(r.nodes[a].y / gridSpacing))
		r.link(a, gridIndex(gi, gj), roadRamp, false)
	}
	// Motorways east, north, west, south from the ring.
	for q := 0; q < 4; q++ {
		prev := first + int32(q*ringNodes/4)
		θ := math.Pi / 2 * float64(q)
		for d := ringRadius + motorwayStep; d <= ringRadius+motorwayLen; d += motorwayStep {
			r.nodes = append(r.nodes, node{x: d * math.Cos(θ), y: d * math.Sin(θ)})
			cur := int32(len(r.nodes) - 1)
			r.link(prev, cur, roadMotorway, false)
			prev = cur
		}
		r.exits = append(r.exits, prev)
	}
	// Depots a few km out, fuel stations on arterials.
	for k := 0; k < 4; k++ {
		θ := math.Pi/4 + math.Pi/2*float64(k)
		r.depots = append(r.depots, gridIndex(int(math.Round(3000*math.Cos(θ)/gridSpacing)), int(math.Round(3000*math.Sin(θ)/gridSpacing))))
	}
	for k := 0; k < 8; k++ {
		i := (rng.IntN(2*gridHalf/arterialEvery+1) - gridHalf/arterialEvery) * arterialEvery
		j := rng.IntN(2*gridHalf+1) - gridHalf
		if k%2 == 1 {
			i, j = j, i
		}
		r.stations = append(r.stations, gridIndex(i, j))
	}
	return r
}

func (r *roads) link(a, b int32, k roadKind, tunnel bool) {
	l := math.Hypot(r.nodes[a].x-r.nodes[b].x, r.nodes[a].y-r.nodes[b].y)
	r.nodes[a].edges = append(r.nodes[a].edges, edge{to: b, kind: k, tunnel: tunnel, length: l})
	r.nodes[b].edges = append(r.nodes[b].edges, edge{to: a, kind: k, tunnel: tunnel, length: l})
}

func (r *roads) edgeBetween(a, b int32) *edge {
	es := r.nodes[a].edges
	for i := range es {
		if es[i].to == b {
			return &es[i]
		}
	}
	return nil
}

// nearest returns the node of list closest to (x, y).
func (r *roads) nearest(list []int32, x, y float64) int32 {
	best, bd := list[0], math.Inf(1)
	for _, n := range list {
		d := math.Hypot(r.nodes[n].x-x, r.nodes[n].y-y)
		if d < bd {
			best, bd = n, d
		}
	}
	return best
}

// router finds fastest paths. It keeps its scratch arrays between calls; one per Sim.
type router struct {
	r    *roads
	dist []float64
	prev []int32
	seen []uint32
	gen  uint32
	pq   nodeHeap
}

func newRouter(r *roads) *router {
	return &router{r: r, dist: make([]float64, len(r.nodes)), prev: make([]int32, len(r.nodes)), seen: make([]uint32, len(r.nodes))}
}

// route returns the fastest node sequence from a to b (inclusive), appended to dst[:0].
// It is A* over travel time with the straight-line distance at motorway speed as the
// (admissible) estimate.
func (rt *router) route(dst []int32, a, b int32) []int32 {
	dst = dst[:0]
	if a == b {
		return append(dst, a)
	}
	nodes := rt.r.nodes
	bx, by := nodes[b].x, nodes[b].y
	vmax := roadSpeed[roadMotorway]
	est := func(n int32) float64 { return math.Hypot(nodes[n].x-bx, nodes[n].y-by) / vmax }
	rt.gen++
	rt.pq = rt.pq[:0]
	rt.seen[a], rt.dist[a], rt.prev[a] = rt.gen, 0, -1
	rt.pq.push(heapItem{a, est(a)})
	for len(rt.pq) > 0 {
		it := rt.pq.pop()
		if it.n == b {
			break
		}
		d := rt.dist[it.n]
		if it.f > d+est(it.n)+1e-9 {
			continue // stale entry
		}
		for _, e := range nodes[it.n].edges {
			nd := d + e.length/roadSpeed[e.kind]
			if rt.seen[e.to] != rt.gen || nd < rt.dist[e.to] {
				rt.seen[e.to], rt.dist[e.to], rt.prev[e.to] = rt.gen, nd, it.n
				rt.pq.push(heapItem{e.to, nd + est(e.to)})
			}
		}
	}
	if rt.seen[b] != rt.gen {
		return append(dst, a) // unreachable: stay (cannot happen on a connected network)
	}
	for n := b; n != -1; n = rt.prev[n] {
		dst = append(dst, n)
	}
	for i, j := 0, len(dst)-1; i < j; i, j = i+1, j-1 {
		dst[i], dst[j] = dst[j], dst[i]
	}
	return dst
}

type heapItem struct {
	n int32
	f float64 // cost so far plus estimate
}

// nodeHeap is a binary min-heap on f; typed, so pushing costs no allocation.
type nodeHeap []heapItem

func (h *nodeHeap) push(it heapItem) {
	*h = append(*h, it)
	q := *h
	for i := len(q) - 1; i > 0; {
		p := (i - 1) / 2
		if q[p].f <= q[i].f {
			break
		}
		q[p], q[i] = q[i], q[p]
		i = p
	}
}

func (h *nodeHeap) pop() heapItem {
	q := *h
	top := q[0]
	last := len(q) - 1
	q[0] = q[last]
	q = q[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(q) && q[l].f < q[m].f {
			m = l
		}
		if r < len(q) && q[r].f < q[m].f {
			m = r
		}
		if m == i {
			break
		}
		q[m], q[i] = q[i], q[m]
		i = m
	}
	*h = q
	return top
}
