#!/usr/bin/env python3
"""Upload sink behind the origin nginx: reads a whole request body (Content-Length or chunked),
throws it away, and only then answers `200 received N`, so an upload is timed end to end.

  sink.py PORT
"""
import socket
import sys
import threading

BUF = 1 << 20


def read_exact_discard(f, n, scratch):
    while n:
        got = f.readinto(memoryview(scratch)[:min(n, BUF)])
        if not got:
            raise EOFError
        n -= got


def serve(conn):
    scratch = bytearray(BUF)
    f = conn.makefile("rb", buffering=BUF)
    try:
        while True:
            request = f.readline()
            if not request:
                return
            headers = {}
            while True:
                line = f.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            received = 0
            if "chunked" in headers.get("transfer-encoding", "").lower():
                while True:
                    size = int(f.readline().split(b";")[0], 16)
                    if size == 0:
                        while f.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        break
                    read_exact_discard(f, size, scratch)
                    f.readline()
                    received += size
            else:
                received = int(headers.get("content-length", "0"))
                read_exact_discard(f, received, scratch)
            body = f"received {received}\n".encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
    except (EOFError, ConnectionError, ValueError):
        return
    finally:
        conn.close()


def main():
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", int(sys.argv[1])))
    srv.listen(128)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
