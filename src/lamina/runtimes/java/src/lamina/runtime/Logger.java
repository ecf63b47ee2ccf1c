package lamina.runtime;

import com.amazonaws.services.lambda.runtime.LambdaLogger;
import com.amazonaws.services.lambda.runtime.logging.LogLevel;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.text.SimpleDateFormat;
import java.util.Date;
import java.util.TimeZone;

/**
 * The function's LambdaLogger: each call is one log event. Lambda's runtime frames each
 * message on a telemetry descriptor; here the log is the runtime's stdout, read line by line,
 * so a message's own line breaks are written as carriage returns (the log shows one event).
 *
 * <p>In JSON log format each message is a record {timestamp, level, message, AWSRequestId},
 * and messages below AWS_LAMBDA_LOG_LEVEL are dropped; in text format a message with a level
 * is prefixed "[LEVEL] ".
 */
final class Logger implements LambdaLogger {
    private final PrintStream out;
    private final boolean json;
    private final LogLevel minimum;
    private volatile String requestId;
    private volatile String tenantId;

    Logger(PrintStream out, String format, String level) {
        this.out = out;
        this.json = "JSON".equalsIgnoreCase(format);
        LogLevel min = LogLevel.UNDEFINED;
        if (json && level != null && !level.isEmpty()) {
            try {
                min = LogLevel.fromString(level);
            } catch (IllegalArgumentException e) {
                min = LogLevel.UNDEFINED;
            }
        }
        this.minimum = min;
    }

    boolean json() {
        return json;
    }

    void invocation(String requestId, String tenantId) {
        this.requestId = requestId;
        this.tenantId = tenantId;
    }

    /** An error the runtime reports: an ERROR record in JSON format, plain text otherwise. */
    void error(String message) {
        log(message, json ? LogLevel.ERROR : LogLevel.UNDEFINED);
    }

    @Override
    public void log(String message) {
        log(message, LogLevel.UNDEFINED);
    }

    @Override
    public void log(byte[] message) {
        log(message, LogLevel.UNDEFINED);
    }

    @Override
    public void log(String message, LogLevel level) {
        if (!enabled(level)) {
            return;
        }
        String text = String.valueOf(message);
        if (json) {
            text = record(text, level);
        } else if (level != null && level != LogLevel.UNDEFINED) {
            text = "[" + level.name() + "] " + text;
        }
        emit(text);
    }

    @Override
    public void log(byte[] message, LogLevel level) {
        if (enabled(level) && message != null) {
            emit(new String(message, StandardCharsets.UTF_8));
        }
    }

    private boolean enabled(LogLevel level) {
        return level == null || level == LogLevel.UNDEFINED || level.ordinal() >= minimum.ordinal();
    }

    private String record(String message, LogLevel level) {
        SimpleDateFormat f = new SimpleDateFormat("yyyy-MM-dd'T'HH:mm:ss.SSS'Z'");
        f.setTimeZone(TimeZone.getTimeZone("UTC"));
        StringBuilder sb = new StringBuilder("{\"timestamp\":");
        Json.quote(f.format(new Date()), sb);
        sb.append(",\"level\":");
        Json.quote((level == null ? LogLevel.UNDEFINED : level).name(), sb);
        sb.append(",\"message\":");
        Json.quote(message, sb);
        if (requestId != null) {
            sb.append(",\"AWSRequestId\":");
            Json.quote(requestId, sb);
        }
        if (tenantId != null) {
            sb.append(",\"tenantId\":");
            Json.quote(tenantId, sb);
        }
        return sb.append('}').toString();
    }

    private void emit(String text) {
        if (text.endsWith("\n")) {
            text = text.substring(0, text.length() - 1);
        }
        text = text.replace("\r\n", "\r").replace('\n', '\r');
        synchronized (out) {
            out.print(text);
            out.print('\n');
            out.flush();
        }
    }
}
