package auth

import (
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Group scoping works on the messages' shape rather than per method, so a new RPC is
// covered without a line of code: every fleet.v1 message that concerns one vehicle carries
// it in a field named vehicle_id, and lists of vehicles are named vehicle_ids.
const (
	fieldVehicleID  = "vehicle_id"
	fieldVehicleIDs = "vehicle_ids"
	fieldWho        = "who"
)

// requestVisible reports whether every vehicle a request names is visible to p.
func (g *Guard) requestVisible(p *Principal, m proto.Message) bool {
	r := m.ProtoReflect()
	fields := r.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if fd.Kind() != protoreflect.StringKind || !r.Has(fd) {
			continue
		}
		switch {
		case fd.Name() == fieldVehicleID && !fd.IsList():
			if !g.cfg.Groups.Visible(p, r.Get(fd).String()) {
				return false
			}
		case fd.Name() == fieldVehicleIDs && fd.IsList():
			l := r.Get(fd).List()
			for j := 0; j < l.Len(); j++ {
				if !g.cfg.Groups.Visible(p, l.Get(j).String()) {
					return false
				}
			}
		}
	}
	return true
}

// prune removes from m every element of a list that concerns a vehicle p may not see, and
// reports whether m itself (or a single message inside it) concerns such a vehicle, in
// which case the caller hides the whole message.
func (g *Guard) prune(p *Principal, m protoreflect.Message) (hidden bool) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			// Maps in fleet.v1 hold attributes and parameters, never vehicles.
		case fd.Kind() == protoreflect.StringKind && fd.Name() == fieldVehicleID && !fd.IsList():
			if !g.cfg.Groups.Visible(p, v.String()) {
				hidden = true
			}
		case fd.Kind() == protoreflect.StringKind && fd.Name() == fieldVehicleIDs && fd.IsList():
			l := m.Mutable(fd).List()
			keep := 0
			for i := 0; i < l.Len(); i++ {
				if g.cfg.Groups.Visible(p, l.Get(i).String()) {
					l.Set(keep, l.Get(i))
					keep++
				}
			}
			l.Truncate(keep)
		case fd.Kind() == protoreflect.MessageKind && fd.IsList():
			l := m.Mutable(fd).List()
			keep := 0
			for i := 0; i < l.Len(); i++ {
				if !g.prune(p, l.Get(i).Message()) {
					l.Set(keep, l.Get(i))
					keep++
				}
			}
			l.Truncate(keep)
		case fd.Kind() == protoreflect.MessageKind:
			if g.prune(p, v.Message()) {
				hidden = true
			}
		}
		return !hidden
	})
	return hidden
}

// stampWho overwrites a request's "who" field with the authenticated principal: the
// records that say who acted never carry what a caller typed.
func stampWho(m proto.Message, name string) {
	r := m.ProtoReflect()
	fd := r.Descriptor().Fields().ByName(fieldWho)
	if fd != nil && fd.Kind() == protoreflect.StringKind && !fd.IsList() {
		r.Set(fd, protoreflect.ValueOfString(name))
	}
}
