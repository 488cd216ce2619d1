package httpapi

import (
	"strconv"

	"github.com/gofiber/fiber/v2"

	"rooms/gateway/internal/presence"
	"rooms/gateway/internal/store"
	"rooms/shared/message"
)

// Paging limits of GET /api/chat/rooms/{id}/messages.
const (
	DefaultMessagesLimit = 50
	MaxMessagesLimit     = 200
)

type roomJSON struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	TimeCreated string `json:"time_created"`
}

type roomDetailJSON struct {
	roomJSON
	LastSeq int64 `json:"last_seq"`
}

func roomOf(r store.Room) roomJSON {
	return roomJSON{ID: strconv.FormatInt(r.ID, 10), Name: r.Name, TimeCreated: message.FormatTime(r.TimeCreated)}
}

func (s *Server) createRoom(c *fiber.Ctx) error {
	var in struct {
		Name string `json:"name"`
	}
	if err := decode(c, &in); err != nil {
		return err
	}
	name, err := cleanRoomName(in.Name)
	if err != nil {
		return err
	}
	r, err := s.o.Store.CreateRoom(c.UserContext(), name)
	if err != nil {
		return err
	}
	return c.JSON(roomOf(r))
}

func (s *Server) listRooms(c *fiber.Ctx) error {
	rooms, err := s.o.Store.Rooms(c.UserContext())
	if err != nil {
		return err
	}
	out := make([]roomJSON, 0, len(rooms))
	for _, r := range rooms {
		out = append(out, roomOf(r))
	}
	return c.JSON(out)
}

// room loads the room named by the :id parameter; a malformed id is
// not_found like an unknown one.
func (s *Server) room(c *fiber.Ctx) (store.Room, error) {
	id, ok := parseID(c.Params("id"))
	if !ok {
		return store.Room{}, errNotFound
	}
	return s.o.Store.Room(c.UserContext(), id)
}

func (s *Server) getRoom(c *fiber.Ctx) error {
	r, err := s.room(c)
	if err != nil {
		return err
	}
	return c.JSON(roomDetailJSON{roomJSON: roomOf(r), LastSeq: r.LastSeq})
}

func (s *Server) roomClients(c *fiber.Ctx) error {
	r, err := s.room(c)
	if err != nil {
		return err
	}
	clients, err := presence.List(c.UserContext(), s.o.Redis, s.o.Prefix, r.ID, s.o.Now())
	if err != nil {
		return err
	}
	return c.JSON(clients)
}

func (s *Server) roomMessages(c *fiber.Ctx) error {
	after, hasAfter, err := queryInt(c, "after_seq")
	if err != nil {
		return err
	}
	before, hasBefore, err := queryInt(c, "before_seq")
	if err != nil {
		return err
	}
	if hasAfter && hasBefore {
		return validation("after_seq and before_seq cannot be used together")
	}
	limit := int64(DefaultMessagesLimit)
	if l, has, err := queryInt(c, "limit"); err != nil {
		return validation("limit must be an integer from 1 to 200")
	} else if has {
		if l < 1 || l > MaxMessagesLimit {
			return validation("limit must be an integer from 1 to 200")
		}
		limit = l
	}
	r, err := s.room(c)
	if err != nil {
		return err
	}
	var msgs []message.Message
	switch {
	case hasAfter:
		msgs, err = s.o.Store.HistoryAfter(c.UserContext(), r.ID, after, int(limit))
	case hasBefore:
		msgs, err = s.o.Store.MessagesBefore(c.UserContext(), r.ID, before, int(limit))
	default:
		msgs, err = s.o.Store.LatestMessages(c.UserContext(), r.ID, int(limit))
	}
	if err != nil {
		return err
	}
	return c.JSON(msgs)
}
