// containerd-interop puts containerd's own generated Go code (Debian's
// golang-github-containerd-containerd-dev) on the other side of rund's protocol files:
//
//	containerd-interop dump DIR NAME...     write a filled message of each named type to DIR/NAME.bin
//	containerd-interop task-client SOCKET   call all 17 containerd.task.v2.Task methods on SOCKET
//	containerd-interop events-server SOCKET serve containerd's ttrpc Events service until stdin closes
//
// "Filled" means every field set to a value derived from its path, by the same rule as
// the Java tests' ProtoFill: strings are the path, bytes the path's bytes, bools true,
// enums 1, numbers fnv1a32(path) % 100000 + 1, lists and maps two entries. Two sides that
// agree on every field's number and type produce and accept the same bytes.
package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	_ "github.com/containerd/cgroups/stats/v1"
	_ "github.com/containerd/cgroups/v2/stats"
	_ "github.com/containerd/containerd/api/events"
	eventsapi "github.com/containerd/containerd/api/services/ttrpc/events/v1"
	_ "github.com/containerd/containerd/api/types"
	_ "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/runtime/v2/task"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl"
	"github.com/gogo/protobuf/proto"
	"github.com/gogo/protobuf/types"
)

var timeType = reflect.TypeOf(time.Time{})

func hash(path string) uint64 {
	h := fnv.New32a()
	h.Write([]byte(path))
	return uint64(h.Sum32()%100000 + 1)
}

func join(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

// fill sets every protobuf field reachable from v (a pointer to a generated struct).
func fill(v reflect.Value, path string) {
	if v.Kind() == reflect.Ptr {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		v = v.Elem()
	}
	if v.Type() == timeType {
		v.Set(reflect.ValueOf(time.Unix(int64(hash(path+".seconds")), int64(hash(path+".nanos"))).UTC()))
		return
	}
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		tag := t.Field(i).Tag.Get("protobuf")
		if tag == "" {
			continue // XXX_ bookkeeping fields
		}
		name := ""
		for _, part := range strings.Split(tag, ",") {
			if strings.HasPrefix(part, "name=") {
				name = strings.TrimPrefix(part, "name=")
			}
		}
		fillValue(v.Field(i), join(path, name), strings.Contains(tag, "enum="))
	}
}

func fillValue(f reflect.Value, path string, enum bool) {
	switch f.Kind() {
	case reflect.String:
		f.SetString(path)
	case reflect.Bool:
		f.SetBool(true)
	case reflect.Int32, reflect.Int64:
		if enum {
			f.SetInt(1)
		} else {
			f.SetInt(int64(hash(path)))
		}
	case reflect.Uint32, reflect.Uint64:
		f.SetUint(hash(path))
	case reflect.Slice:
		if f.Type().Elem().Kind() == reflect.Uint8 {
			f.SetBytes([]byte(path))
			return
		}
		s := reflect.MakeSlice(f.Type(), 2, 2)
		for i := 0; i < 2; i++ {
			fillValue(s.Index(i), fmt.Sprintf("%s[%d]", path, i), enum)
		}
		f.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(f.Type())
		for i := 0; i < 2; i++ {
			m.SetMapIndex(reflect.ValueOf(fmt.Sprintf("%s#k%d", path, i)), reflect.ValueOf(fmt.Sprintf("%s#v%d", path, i)))
		}
		f.Set(m)
	case reflect.Ptr, reflect.Struct:
		fill(f, path)
	default:
		panic(fmt.Sprintf("%s: no rule for %s", path, f.Type()))
	}
}

// filled returns a filled new message of the registered protobuf type name.
func filled(name string) (proto.Message, error) {
	t := proto.MessageType(name)
	if t == nil {
		return nil, fmt.Errorf("no Go type registered as %q", name)
	}
	v := reflect.New(t.Elem())
	fill(v, "")
	return v.Interface().(proto.Message), nil
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: containerd-interop dump DIR NAME... | task-client SOCKET | events-server SOCKET")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "dump":
		err = dump(os.Args[2], os.Args[3:])
	case "task-client":
		err = taskClient(os.Args[2])
	case "events-server":
		err = eventsServer(os.Args[2])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "containerd-interop:", err)
		os.Exit(1)
	}
}

func dump(dir string, names []string) error {
	for _, name := range names {
		m, err := filled(name)
		if err != nil {
			return err
		}
		b, err := proto.Marshal(m)
		if err != nil {
			return fmt.Errorf("marshal %s: %w", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".bin"), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// taskClient calls every Task method through containerd's generated client, with a filled
// request, and prints "<Method> ok" when the answer equals a filled response of the type
// containerd expects, or what differed.
func taskClient(socket string) error {
	conn, err := net.Dial("unix", socket)
	if err != nil {
		return err
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()
	svc := reflect.ValueOf(task.NewTaskClient(client))
	iface := reflect.TypeOf((*task.TaskService)(nil)).Elem()
	for i := 0; i < iface.NumMethod(); i++ {
		name := iface.Method(i).Name
		m := svc.MethodByName(name)
		req := reflect.New(m.Type().In(1).Elem())
		fill(req, "")
		out := m.Call([]reflect.Value{reflect.ValueOf(context.Background()), req})
		if errv := out[1]; !errv.IsNil() {
			fmt.Printf("%s error %v\n", name, errv.Interface())
			continue
		}
		want := reflect.New(m.Type().Out(0).Elem())
		fill(want, "")
		got, _ := proto.Marshal(out[0].Interface().(proto.Message))
		exp, _ := proto.Marshal(want.Interface().(proto.Message))
		if bytes.Equal(got, exp) {
			fmt.Printf("%s ok\n", name)
		} else {
			fmt.Printf("%s mismatch got=%+v\n", name, out[0].Interface())
		}
	}
	return nil
}

type events struct{}

// Forward prints "<namespace> <topic> <type> ok" when the event decodes, through
// containerd's typeurl registry, to a filled message of its type.
func (events) Forward(ctx context.Context, req *eventsapi.ForwardRequest) (*types.Empty, error) {
	env := req.Envelope
	if env == nil || env.Event == nil {
		fmt.Println("forward without envelope or event")
		return &types.Empty{}, nil
	}
	v, err := typeurl.UnmarshalAny(env.Event)
	if err != nil {
		fmt.Printf("%s %s %s undecodable: %v\n", env.Namespace, env.Topic, env.Event.TypeUrl, err)
		return &types.Empty{}, nil
	}
	want, err := filled(env.Event.TypeUrl)
	if err != nil {
		return nil, err
	}
	got, _ := proto.Marshal(v.(proto.Message))
	exp, _ := proto.Marshal(want)
	verdict := "ok"
	if !bytes.Equal(got, exp) {
		verdict = fmt.Sprintf("mismatch got=%+v", v)
	}
	fmt.Printf("%s %s %s %s\n", env.Namespace, env.Topic, env.Event.TypeUrl, verdict)
	return &types.Empty{}, nil
}

func eventsServer(socket string) error {
	s, err := ttrpc.NewServer()
	if err != nil {
		return err
	}
	eventsapi.RegisterEventsService(s, events{})
	l, err := net.Listen("unix", socket)
	if err != nil {
		return err
	}
	go s.Serve(context.Background(), l)
	w := bufio.NewWriter(os.Stdout)
	fmt.Fprintln(w, "ready")
	w.Flush()
	io.Copy(io.Discard, os.Stdin)
	return s.Close()
}
