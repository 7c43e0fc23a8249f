#!/usr/bin/env python3
"""The least a user-space relay can do: a TCP relay that moves bytes from socket to socket
with splice(2) through a pipe, two blocking threads per connection, no parsing, no metrics.
bench/run.py measures it as variant `splice-relay` in the bulk cells: the ceiling any proxy
on this machine reaches with two loopback transfers, against which `ferry` and `direct`
are read.

Usage: splice_relay.py LISTEN_PORT UPSTREAM_PORT (both on 127.0.0.1)."""
import fcntl
import os
import socket
import sys
import threading

F_SETPIPE_SZ = 1031
PIPE_SIZE = 256 * 1024  # as the proxy's splice pipes


def pump(src, dst):
    """src -> pipe -> dst until src ends; then ends dst's sending side."""
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # the user's pipe allowance is spent: the kernel's default size
    try:
        while True:
            n = os.splice(src.fileno(), w, PIPE_SIZE)
            if n == 0:
                break
            while n:
                n -= os.splice(r, dst.fileno(), n)
    except OSError:
        pass
    finally:
        os.close(r)
        os.close(w)
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def serve(client, upstream_port):
    with client, socket.create_connection(("127.0.0.1", upstream_port)) as upstream:
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
        back.start()
        pump(client, upstream)
        back.join()


def main():
    listen_port, upstream_port = int(sys.argv[1]), int(sys.argv[2])
    listener = socket.create_server(("127.0.0.1", listen_port), backlog=128)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=serve, args=(client, upstream_port), daemon=True).start()


if __name__ == "__main__":
    main()
