// Interop fixture: a client in the Go tutorials' style, built on
// golang.org/x/net/websocket (not the Node `ws` package), run by
// test/interop/go.test.ts against the CLI server.
//
// It dials ws://HOST/server with Origin "http://HOST/" (the tutorials' call,
// trailing slash included: R19 must accept it as same-origin), sends -n
// requests with websocket.JSON.Send, checks each reply (R13, R14), then closes
// (x/net/websocket's Close sends close 1000 and drops the TCP connection at once).
//
// x/net/websocket answers a ping only from inside Read: a client that reads
// only while waiting for a reply (the tutorials' loop: send, receive, sleep)
// leaves the server's pings unanswered while it sleeps. -reader=loop (the
// default) runs a persistent read loop in a goroutine (R1), so pings are
// answered while main sleeps; -reader=inline is the tutorials' loop, kept to
// show the difference under a short heartbeat (R4).
//
// -count-pongs dials with net.Dial + websocket.NewClient instead of
// websocket.Dial, to count the pong frames the client writes.
//
// Prints one JSON summary line on stdout; exit status 0 unless the program
// itself could not run (failed checks are reported in the summary).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/websocket"
)

// Message is the tutorials' struct.
type Message struct {
	RequestID      int    `json:"requestID"`
	Command        string `json:"command"`
	SomeOtherThing string `json:"someOtherThing"`
	Success        bool   `json:"success"`
}

type summary struct {
	Connected   bool     `json:"connected"`
	Sent        int      `json:"sent"`
	Replies     int      `json:"replies"`
	Ok          int      `json:"ok"`
	Mismatches  []string `json:"mismatches"`
	Error       string   `json:"error,omitempty"`
	PongsSent   int64    `json:"pongsSent"`
	CloseError  string   `json:"closeError,omitempty"`
	ElapsedMs   int64    `json:"elapsedMs"`
	ReaderMode  string   `json:"readerMode"`
	ServerFirst string   `json:"firstReply,omitempty"`
}

// countingConn counts the pong frames written to the socket. x/net/websocket
// buffers each frame in a bufio.Writer and flushes it whole, so a small
// control frame reaches Write as one call starting with its header byte.
type countingConn struct {
	net.Conn
	pongs *int64
}

func (c countingConn) Write(p []byte) (int, error) {
	if len(p) > 0 && p[0]&0x0f == websocket.PongFrame {
		atomic.AddInt64(c.pongs, 1)
	}
	return c.Conn.Write(p)
}

func main() {
	host := flag.String("host", "127.0.0.1:8080", "server host:port")
	path := flag.String("path", "/server", "WebSocket path")
	n := flag.Int("n", 10, "number of requests")
	interval := flag.Duration("interval", 0, "pause between requests (the tutorials sleep 2s)")
	replyTimeout := flag.Duration("reply-timeout", 5*time.Second, "time to wait for each reply")
	reader := flag.String("reader", "loop", "loop: persistent read goroutine; inline: read only after each send")
	countPongs := flag.Bool("count-pongs", false, "dial via websocket.NewClient over a conn that counts pongs")
	originFlag := flag.String("origin", "", `Origin header (default "http://HOST/", as in the tutorials)`)
	flag.Parse()

	start := time.Now()
	s := summary{Mismatches: []string{}, ReaderMode: *reader}
	defer func() {
		s.ElapsedMs = time.Since(start).Milliseconds()
		out, _ := json.Marshal(s)
		fmt.Println(string(out))
	}()

	url := "ws://" + *host + *path
	origin := "http://" + *host + "/"
	if *originFlag != "" {
		origin = *originFlag
	}
	var ws *websocket.Conn
	var err error
	if *countPongs {
		var config *websocket.Config
		config, err = websocket.NewConfig(url, origin)
		if err == nil {
			var raw net.Conn
			raw, err = net.DialTimeout("tcp", *host, 5*time.Second)
			if err == nil {
				ws, err = websocket.NewClient(config, countingConn{Conn: raw, pongs: &s.PongsSent})
				if err != nil {
					raw.Close()
				}
			}
		}
	} else {
		ws, err = websocket.Dial(url, "", origin)
	}
	if err != nil {
		s.Error = "dial: " + err.Error()
		return
	}
	s.Connected = true

	type result struct {
		msg Message
		err error
	}
	replies := make(chan result, *n+2) // never blocks the read loop
	var wg sync.WaitGroup
	if *reader == "loop" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				var m Message
				err := websocket.JSON.Receive(ws, &m)
				replies <- result{m, err}
				if err != nil {
					return
				}
			}
		}()
	}
	receive := func() result {
		if *reader == "loop" {
			select {
			case r := <-replies:
				return r
			case <-time.After(*replyTimeout):
				return result{err: fmt.Errorf("no reply within %v", *replyTimeout)}
			}
		}
		ws.SetReadDeadline(time.Now().Add(*replyTimeout))
		var m Message
		err := websocket.JSON.Receive(ws, &m)
		return result{m, err}
	}

	for i := 1; i <= *n; i++ {
		if i > 1 && *interval > 0 {
			time.Sleep(*interval)
		}
		req := Message{RequestID: i, Command: fmt.Sprintf("cmd %d", i), SomeOtherThing: "go"}
		if err := websocket.JSON.Send(ws, req); err != nil {
			s.Error = fmt.Sprintf("send %d: %v", i, err)
			break
		}
		s.Sent++
		r := receive()
		if r.err != nil {
			s.Error = fmt.Sprintf("receive %d: %v", i, r.err)
			break
		}
		s.Replies++
		want := "Server processed command: " + req.Command
		if r.msg.RequestID == i && r.msg.Success && r.msg.SomeOtherThing == want {
			s.Ok++
		} else {
			s.Mismatches = append(s.Mismatches, fmt.Sprintf("request %d: got %+v", i, r.msg))
		}
		if i == 1 {
			b, _ := json.Marshal(r.msg)
			s.ServerFirst = string(b)
		}
	}
	if err := ws.Close(); err != nil {
		s.CloseError = err.Error()
	}
	// The read loop ends with the connection; do not hang on it.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		s.CloseError += " (read loop still running 2s after Close)"
	}
	_ = os.Stdout.Sync()
}
