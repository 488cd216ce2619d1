// Command gateway serves the Rooms HTTP API and WebSockets. Its whole
// configuration comes from the environment (see internal/app.Config).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"rooms/gateway/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := app.Run(ctx, os.Getenv, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}
