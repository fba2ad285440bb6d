package fence

import (
	"slices"
	"strings"

	"github.com/tidwall/rtree"
)

// Index is an immutable set of zones with an R-tree over their bounding boxes. A change
// to the zones builds a new Index; readers holding the old one are unaffected.
//
// Shapes that cross the antimeridian live in a frame whose longitudes pass 180; their
// boxes are inserted twice, as they are and shifted by -360, so a point in [-180, 180]
// finds them from either side.
type Index struct {
	tree  rtree.RTreeGN[float64, *Zone]
	byID  map[string]*Zone
	zones []*Zone // sorted by id
}

// NewIndex builds an index over zones (later duplicates of an id replace earlier ones).
func NewIndex(zones []*Zone) *Index {
	ix := &Index{byID: make(map[string]*Zone, len(zones))}
	for _, z := range zones {
		ix.byID[z.ID] = z
	}
	for _, z := range ix.byID {
		ix.zones = append(ix.zones, z)
		for _, r := range z.shape.rects() {
			ix.tree.Insert([2]float64{r[0], r[1]}, [2]float64{r[2], r[3]}, z)
			if r[2] > 180 {
				ix.tree.Insert([2]float64{r[0] - 360, r[1]}, [2]float64{r[2] - 360, r[3]}, z)
			}
		}
	}
	slices.SortFunc(ix.zones, func(a, b *Zone) int { return strings.Compare(a.ID, b.ID) })
	return ix
}

// Len is the number of zones.
func (ix *Index) Len() int { return len(ix.zones) }

// Zone returns the zone with id.
func (ix *Index) Zone(id string) (*Zone, bool) {
	z, ok := ix.byID[id]
	return z, ok
}

// Zones returns every zone, ordered by id. The slice is shared: do not modify it.
func (ix *Index) Zones() []*Zone { return ix.zones }

// At returns the zones containing the point, ordered by id, regardless of schedules
// and of which vehicles they apply to.
func (ix *Index) At(lat, lon float64) []*Zone {
	var out []*Zone
	ix.candidates(lon, lat, lon, lat, func(z *Zone) {
		if z.Contains(lat, lon) && !slices.Contains(out, z) {
			out = append(out, z)
		}
	})
	slices.SortFunc(out, func(a, b *Zone) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// candidates calls fn for every zone whose box meets the box (minX..maxX may pass 180
// for a segment that crosses the antimeridian). A zone may be reported twice.
func (ix *Index) candidates(minX, minY, maxX, maxY float64, fn func(*Zone)) {
	iter := func(_, _ [2]float64, z *Zone) bool { fn(z); return true }
	ix.tree.Search([2]float64{minX, minY}, [2]float64{maxX, maxY}, iter)
	if maxX > 180 {
		ix.tree.Search([2]float64{minX - 360, minY}, [2]float64{maxX - 360, maxY}, iter)
	}
}
