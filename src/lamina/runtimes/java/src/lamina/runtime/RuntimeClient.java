package lamina.runtime;

import java.io.BufferedInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Locale;
import java.util.Map;

/**
 * One keep-alive HTTP/1.1 connection to the Runtime API.
 *
 * <p>A raw socket rather than HttpURLConnection or java.net.http: the peer is fixed and local,
 * and those clients load hundreds of classes at start-up, which every cold start would pay.
 */
final class RuntimeClient {
    static final String PREFIX = "/2018-06-01/runtime";

    /** One response: status, headers (lower-case names) and body. */
    static final class Response {
        final int status;
        final Map<String, String> headers;
        final byte[] body;

        Response(int status, Map<String, String> headers, byte[] body) {
            this.status = status;
            this.headers = headers;
            this.body = body;
        }

        String header(String name) {
            return headers.get(name.toLowerCase(Locale.ROOT));
        }
    }

    private final String host;
    private final int port;
    private Socket socket;
    private InputStream in;
    private OutputStream out;

    RuntimeClient(String address) {
        int colon = address.lastIndexOf(':');
        this.host = address.substring(0, colon).replace("[", "").replace("]", "");
        this.port = Integer.parseInt(address.substring(colon + 1));
    }

    Response next() throws IOException {
        Response r = request("GET", PREFIX + "/invocation/next", null, null);
        if (r.status != 200) {
            throw new IOException("Runtime API /invocation/next answered " + r.status);
        }
        return r;
    }

    void postResponse(String requestId, byte[] body) throws IOException {
        request("POST", PREFIX + "/invocation/" + requestId + "/response", body, null);
    }

    void postError(String requestId, byte[] body, String errorType) throws IOException {
        request("POST", PREFIX + "/invocation/" + requestId + "/error", body, errorType);
    }

    void postInitError(byte[] body, String errorType) throws IOException {
        request("POST", PREFIX + "/init/error", body, errorType);
    }

    private Response request(String method, String path, byte[] body, String errorType)
            throws IOException {
        StringBuilder head = new StringBuilder(160);
        head.append(method).append(' ').append(path).append(" HTTP/1.1\r\nHost: ")
                .append(host).append(':').append(port).append("\r\n");
        if (body != null) {
            head.append("Content-Type: application/json\r\nContent-Length: ")
                    .append(body.length).append("\r\n");
        }
        if (errorType != null) {
            head.append("Lambda-Runtime-Function-Error-Type: ").append(errorType).append("\r\n");
        }
        head.append("\r\n");
        if (socket == null) {
            connect();
        }
        try {
            out.write(head.toString().getBytes(StandardCharsets.UTF_8));
            if (body != null) {
                out.write(body);
            }
            out.flush();
            return read();
        } catch (IOException e) {
            close();
            throw e;
        }
    }

    private void connect() throws IOException {
        Socket s = new Socket();
        s.setTcpNoDelay(true);
        s.connect(new InetSocketAddress(host, port));
        socket = s;
        in = new BufferedInputStream(s.getInputStream(), 65536);
        out = s.getOutputStream();
    }

    void close() {
        if (socket != null) {
            try {
                socket.close();
            } catch (IOException e) {
                // already gone
            }
            socket = null;
        }
    }

    private String line() throws IOException {
        StringBuilder sb = new StringBuilder(64);
        while (true) {
            int c = in.read();
            if (c < 0) {
                throw new IOException("Runtime API closed the connection");
            }
            if (c == '\n') {
                int n = sb.length();
                if (n > 0 && sb.charAt(n - 1) == '\r') {
                    sb.setLength(n - 1);
                }
                return sb.toString();
            }
            sb.append((char) c);
        }
    }

    private Response read() throws IOException {
        String status = line();
        int sp = status.indexOf(' ');
        int code = Integer.parseInt(status.substring(sp + 1, sp + 4));
        Map<String, String> headers = new HashMap<String, String>();
        for (String h = line(); !h.isEmpty(); h = line()) {
            int colon = h.indexOf(':');
            if (colon > 0) {
                headers.put(h.substring(0, colon).trim().toLowerCase(Locale.ROOT),
                        h.substring(colon + 1).trim());
            }
        }
        byte[] body;
        if ("chunked".equalsIgnoreCase(headers.get("transfer-encoding"))) {
            ByteArrayOutputStream buf = new ByteArrayOutputStream();
            while (true) {
                String size = line();
                int semi = size.indexOf(';');
                int n = Integer.parseInt((semi >= 0 ? size.substring(0, semi) : size).trim(), 16);
                if (n == 0) {
                    while (!line().isEmpty()) {
                        // trailers
                    }
                    break;
                }
                buf.write(readFully(n));
                line();
            }
            body = buf.toByteArray();
        } else {
            String length = headers.get("content-length");
            body = readFully(length == null ? 0 : Integer.parseInt(length));
        }
        if ("close".equalsIgnoreCase(headers.get("connection"))) {
            close();
        }
        return new Response(code, headers, body);
    }

    private byte[] readFully(int n) throws IOException {
        byte[] b = new byte[n];
        int off = 0;
        while (off < n) {
            int got = in.read(b, off, n - off);
            if (got < 0) {
                throw new IOException("Runtime API closed the connection");
            }
            off += got;
        }
        return b;
    }
}
