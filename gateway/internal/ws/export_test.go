package ws

// SetInlineWrites turns the fan-out reader's own writes (deliver.go) on or
// off, whatever GOMAXPROCS is, so that the tests cover them. Call it
// before the first connection.
func SetInlineWrites(s *Server, on bool) { s.inline = on }
