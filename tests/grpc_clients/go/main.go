// Command grpcclient calls quarry.retrieval.v1.Retrieval/Retrieve with code generated from the
// public proto, as a Go consumer of the API would, for the Python tests
// (tests/grpc_clients/go_client.py builds and runs it).
//
// Standard input: one JSON object
//
//	{"address": "127.0.0.1:PORT", "api_key": "...", "requests": [<RetrieveRequest as proto JSON>, ...]}
//
// Standard output: a JSON array with one element per request, in order: the RetrieveResponse as
// proto JSON (proto field names, unpopulated fields left out), or, for a failed call,
// {"error": {"code": "<canonical gRPC code name, e.g. UNAUTHENTICATED>", "message": "..."}}.
// Each call carries `authorization: Bearer <api_key>` metadata and a 30 s deadline. The exit
// status is 0 when every call was made (failed calls included), 2 for bad input or no channel.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	retrievalv1 "quarry.dev/gen/go/quarry/retrieval/v1"
)

const callTimeout = 30 * time.Second

type input struct {
	Address  string            `json:"address"`
	APIKey   string            `json:"api_key"`
	Requests []json.RawMessage `json:"requests"`
}

type callError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

type failed struct {
	Error callError `json:"error"`
}

// codeNames are the canonical names (google.rpc.Code, as Python's grpc.StatusCode spells them);
// Go's codes.Code.String() gives CamelCase ones instead.
var codeNames = map[codes.Code]string{
	codes.OK:                 "OK",
	codes.Canceled:           "CANCELLED",
	codes.Unknown:            "UNKNOWN",
	codes.InvalidArgument:    "INVALID_ARGUMENT",
	codes.DeadlineExceeded:   "DEADLINE_EXCEEDED",
	codes.NotFound:           "NOT_FOUND",
	codes.AlreadyExists:      "ALREADY_EXISTS",
	codes.PermissionDenied:   "PERMISSION_DENIED",
	codes.ResourceExhausted:  "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION",
	codes.Aborted:            "ABORTED",
	codes.OutOfRange:         "OUT_OF_RANGE",
	codes.Unimplemented:      "UNIMPLEMENTED",
	codes.Internal:           "INTERNAL",
	codes.Unavailable:        "UNAVAILABLE",
	codes.DataLoss:           "DATA_LOSS",
	codes.Unauthenticated:    "UNAUTHENTICATED",
}

func codeName(c codes.Code) string {
	if name, ok := codeNames[c]; ok {
		return name
	}
	return fmt.Sprintf("CODE_%d", uint32(c))
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "grpcclient: "+format+"\n", args...)
	os.Exit(2)
}

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("reading stdin: %v", err)
	}
	var in input
	if err := json.Unmarshal(raw, &in); err != nil {
		fail("stdin is not the expected JSON object: %v", err)
	}
	if in.Address == "" {
		fail("no address")
	}
	requests := make([]*retrievalv1.RetrieveRequest, len(in.Requests))
	for i, message := range in.Requests {
		requests[i] = &retrievalv1.RetrieveRequest{}
		if err := protojson.Unmarshal(message, requests[i]); err != nil {
			fail("requests[%d] is not a RetrieveRequest: %v", i, err)
		}
	}

	conn, err := grpc.NewClient(in.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fail("channel to %s: %v", in.Address, err)
	}
	defer conn.Close()
	client := retrievalv1.NewRetrievalClient(conn)
	marshal := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: false}

	out := make([]json.RawMessage, 0, len(requests))
	for _, request := range requests {
		out = append(out, call(client, in.APIKey, request, marshal))
	}
	encoded, err := json.Marshal(out)
	if err != nil {
		fail("encoding the responses: %v", err)
	}
	os.Stdout.Write(append(encoded, '\n'))
}

func call(client retrievalv1.RetrievalClient, apiKey string, request *retrievalv1.RetrieveRequest,
	marshal protojson.MarshalOptions) json.RawMessage {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+apiKey)
	response, err := client.Retrieve(ctx, request)
	if err != nil {
		s := status.Convert(err)
		encoded, _ := json.Marshal(failed{Error: callError{Code: codeName(s.Code()), Message: s.Message()}})
		return encoded
	}
	encoded, err := marshal.Marshal(response)
	if err != nil {
		fail("encoding a response: %v", err)
	}
	return encoded
}
