module quarry.dev/grpcclient

go 1.26.0

require (
	google.golang.org/grpc v1.85.0
	google.golang.org/protobuf v1.36.12
	quarry.dev/gen/go v0.0.0-00010101000000-000000000000
)

require (
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1 // indirect
)

// The code generated from protos/quarry/retrieval/v1 (go_package quarry.dev/gen/go/...), written
// at build time by tests/grpc_clients/go_client.py into ./gen with its own go.mod.
replace quarry.dev/gen/go => ./gen
