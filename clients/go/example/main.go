// Command example is a Go agent using Ironclad through its control API, without cgo:
// it prints the daemon's readiness, follows its events of one kind, adds a Shield deny
// rule, prints the events that come, and removes the rule again.
//
//	go run ./example -socket /run/ironclad/api.sock -deny 203.0.113.7/32 -events 3
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"

	"google.golang.org/grpc"

	controlv1 "github.com/ironclad-rs/ironclad/clients/go/controlv1"
)

func main() {
	socket := flag.String("socket", "/run/ironclad/api.sock", "the daemon's control API socket")
	deny := flag.String("deny", "", "a source prefix to deny while the example runs (shield.deny)")
	kind := flag.String("kind", "shield_drop", "the kind of events to follow")
	events := flag.Int("events", 3, "stop after this many events")
	flag.Parse()

	// The socket is the address; the target name is never resolved.
	conn, err := grpc.Dial("passthrough:///ironclad",
		grpc.WithInsecure(),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", *socket)
		}))
	if err != nil {
		log.Fatalf("connecting to %s: %v", *socket, err)
	}
	defer conn.Close()
	api := controlv1.NewControlClient(conn)
	ctx := context.Background()

	status, err := api.GetStatus(ctx, &controlv1.GetStatusRequest{})
	if err != nil {
		log.Fatalf("status: %v", err)
	}
	fmt.Printf("ready=%v policy=%s features=%d\n", status.Ready, status.Policy, len(status.Features))

	stream, err := api.StreamEvents(ctx, &controlv1.StreamEventsRequest{Kinds: []string{*kind}})
	if err != nil {
		log.Fatalf("events: %v", err)
	}
	var id string
	if *deny != "" {
		added, err := api.AddRule(ctx, &controlv1.AddRuleRequest{
			Section: controlv1.Section_SECTION_SHIELD_DENY,
			Rule:    *deny,
			Comment: "added by the Go example",
		})
		if err != nil {
			log.Fatalf("add: %v", err)
		}
		id = added.Id
		fmt.Printf("added %s in %d us\n", id, added.AppliedMicros)
	}
	for seen := 0; seen < *events; {
		item, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			log.Fatalf("events: %v", err)
		}
		switch it := item.Item.(type) {
		case *controlv1.StreamEventsResponse_Event:
			fmt.Printf("event %s\n", it.Event.Json)
			seen++
		case *controlv1.StreamEventsResponse_Lost:
			fmt.Fprintf(os.Stderr, "%d events lost so far\n", it.Lost.Total)
		}
	}
	if id != "" {
		if _, err := api.RemoveRule(ctx, &controlv1.RemoveRuleRequest{Id: id}); err != nil {
			log.Fatalf("remove: %v", err)
		}
		fmt.Printf("removed %s\n", id)
	}
}
