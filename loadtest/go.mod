module rooms/loadtest

go 1.26.8

toolchain go1.26.11

replace rooms/shared => ../shared

require (
	github.com/HdrHistogram/hdrhistogram-go v1.1.2
	github.com/fasthttp/websocket v1.5.8
)

require (
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/molecule-man/go-brrr v1.3.1 // indirect
	github.com/savsgio/gotils v0.0.0-20240303185622-093b76447511 // indirect
	github.com/valyala/bytebufferpool v1.0.0 // indirect
	github.com/valyala/fasthttp v1.78.0 // indirect
	golang.org/x/net v0.62.0 // indirect
)
