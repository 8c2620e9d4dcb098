// ttrpc-interop runs containerd's own Go ttrpc (github.com/containerd/ttrpc, as Debian
// ships it) against rund's Java implementation, in either role:
//
//	ttrpc-interop server SOCKET   serve rund.ttrpc.test.Echo on SOCKET until stdin closes
//	ttrpc-interop client SOCKET   call the Echo service on SOCKET and report what came back
//	ttrpc-interop bench SOCKET CALLS WORKERS BYTES
//	                              time CALLS Echo calls of BYTES each, WORKERS at a time
//
// The messages are declared here by hand with protobuf struct tags, as ttrpc's own
// types.go does, so that no code generator is needed; their numbers match
// ttrpc/src/test/proto/echo.proto.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const service = "rund.ttrpc.test.Echo"

type EchoRequest struct {
	Text       string `protobuf:"bytes,1,opt,name=text,proto3"`
	SleepMs    int64  `protobuf:"varint,2,opt,name=sleep_ms,proto3"`
	Blob       []byte `protobuf:"bytes,3,opt,name=blob,proto3"`
	ReplyBytes int64  `protobuf:"varint,4,opt,name=reply_bytes,proto3"`
}

func (m *EchoRequest) Reset()         { *m = EchoRequest{} }
func (m *EchoRequest) String() string { return fmt.Sprintf("%+v", *m) }
func (*EchoRequest) ProtoMessage()    {}

type EchoResponse struct {
	Text     string   `protobuf:"bytes,1,opt,name=text,proto3"`
	Blob     []byte   `protobuf:"bytes,2,opt,name=blob,proto3"`
	Metadata []string `protobuf:"bytes,3,rep,name=metadata,proto3"`
}

func (m *EchoResponse) Reset()         { *m = EchoResponse{} }
func (m *EchoResponse) String() string { return fmt.Sprintf("%+v", *m) }
func (*EchoResponse) ProtoMessage()    {}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: ttrpc-interop server|client SOCKET | bench SOCKET CALLS WORKERS BYTES")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "bench":
		err = bench(os.Args[2:])
	case "server":
		err = serve(os.Args[2])
	case "client":
		err = call(os.Args[2])
	default:
		err = fmt.Errorf("unknown role %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ttrpc-interop:", err)
		os.Exit(1)
	}
}

func serve(socket string) error {
	s, err := ttrpc.NewServer(ttrpc.WithServerHandshaker(ttrpc.UnixSocketRequireSameUser()))
	if err != nil {
		return err
	}
	s.Register(service, map[string]ttrpc.Method{
		"Echo": func(ctx context.Context, unmarshal func(interface{}) error) (interface{}, error) {
			var req EchoRequest
			if err := unmarshal(&req); err != nil {
				return nil, err
			}
			if req.SleepMs > 0 {
				select {
				case <-time.After(time.Duration(req.SleepMs) * time.Millisecond):
				case <-ctx.Done():
					return nil, status.FromContextError(ctx.Err()).Err()
				}
			}
			resp := &EchoResponse{Text: req.Text, Blob: req.Blob}
			if md, ok := ttrpc.GetMetadata(ctx); ok {
				resp.Metadata, _ = md.Get("echo")
			}
			return resp, nil
		},
		"Fail": func(ctx context.Context, unmarshal func(interface{}) error) (interface{}, error) {
			var req EchoRequest
			if err := unmarshal(&req); err != nil {
				return nil, err
			}
			return nil, status.Errorf(codes.NotFound, "go was asked to fail: %s", req.Text)
		},
	})
	l, err := net.Listen("unix", socket)
	if err != nil {
		return err
	}
	go s.Serve(context.Background(), l)
	fmt.Println("ready")
	// The test ends the server by closing our stdin.
	io.Copy(io.Discard, os.Stdin)
	return s.Close()
}

// call exercises the Java server and prints one line per check; any surprise is an error.
func call(socket string) error {
	conn, err := net.Dial("unix", socket)
	if err != nil {
		return err
	}
	c := ttrpc.NewClient(conn)
	defer c.Close()

	md := ttrpc.MD{}
	md.Set("echo", "from-go-1", "from-go-2")
	ctx := ttrpc.WithMetadata(context.Background(), md)
	var resp EchoResponse
	if err := c.Call(ctx, service, "Echo", &EchoRequest{Text: "hello from go", Blob: []byte{0, 1, 2, 255}}, &resp); err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	fmt.Printf("echo text=%q blob=%v metadata=%s\n", resp.Text, resp.Blob, strings.Join(resp.Metadata, ","))

	err = c.Call(context.Background(), service, "Fail", &EchoRequest{Text: "NOT_FOUND"}, &resp)
	st, _ := status.FromError(err)
	fmt.Printf("fail code=%s message=%q\n", st.Code(), st.Message())

	err = c.Call(context.Background(), service, "Missing", &EchoRequest{}, &resp)
	st, _ = status.FromError(err)
	fmt.Printf("missing code=%s\n", st.Code())

	tctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	err = c.Call(tctx, service, "Echo", &EchoRequest{SleepMs: 30000}, &resp)
	cancel()
	// Whichever side gives up first, the call must end as past its deadline.
	code := status.Code(err)
	if errors.Is(err, context.DeadlineExceeded) {
		code = codes.DeadlineExceeded
	}
	fmt.Printf("deadline code=%s\n", code)

	// Many calls at once on the one connection, each must get its own answer back.
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			want := fmt.Sprintf("concurrent-%d", i)
			var r EchoResponse
			if err := c.Call(context.Background(), service, "Echo", &EchoRequest{Text: want, SleepMs: 10}, &r); err != nil {
				errs <- err
				return
			}
			if r.Text != want {
				errs <- fmt.Errorf("asked for %q, got %q", want, r.Text)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		fmt.Fprintln(os.Stderr, "concurrent:", err)
		failed++
	}
	fmt.Printf("concurrent calls=200 failed=%d\n", failed)
	return nil
}

// bench prints "p50_us=… p99_us=… calls_per_s=…" for CALLS echo calls of BYTES bytes each,
// made by WORKERS goroutines sharing one connection, after a warm-up of CALLS/10.
func bench(args []string) error {
	if len(args) != 4 {
		return fmt.Errorf("bench needs SOCKET CALLS WORKERS BYTES")
	}
	calls, _ := strconv.Atoi(args[1])
	workers, _ := strconv.Atoi(args[2])
	size, _ := strconv.Atoi(args[3])
	conn, err := net.Dial("unix", args[0])
	if err != nil {
		return err
	}
	c := ttrpc.NewClient(conn)
	defer c.Close()
	req := &EchoRequest{Blob: make([]byte, size)}
	run := func(n int) ([]time.Duration, time.Duration, error) {
		lat := make([]time.Duration, n)
		var next int64 = -1
		var mu sync.Mutex
		var firstErr error
		var wg sync.WaitGroup
		start := time.Now()
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					mu.Lock()
					next++
					i := next
					mu.Unlock()
					if i >= int64(n) {
						return
					}
					var resp EchoResponse
					t := time.Now()
					if err := c.Call(context.Background(), service, "Echo", req, &resp); err != nil {
						mu.Lock()
						firstErr = err
						mu.Unlock()
						return
					}
					lat[i] = time.Since(t)
				}
			}()
		}
		wg.Wait()
		return lat, time.Since(start), firstErr
	}
	if _, _, err := run(calls / 10); err != nil {
		return err
	}
	lat, total, err := run(calls)
	if err != nil {
		return err
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	fmt.Printf("p50_us=%.1f p99_us=%.1f calls_per_s=%.0f\n",
		float64(lat[len(lat)/2].Nanoseconds())/1000, float64(lat[len(lat)*99/100].Nanoseconds())/1000,
		float64(calls)/total.Seconds())
	return nil
}
