package lamina.runtime;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.Set;

/**
 * A problem with the function rather than an exception its code threw: its handler cannot be
 * found or made. A fatal one ends the environment (reported as an init error when it happens
 * during init); another fails each invocation with the same error, as AWS's Java runtime does
 * (a missing class is not an init error there).
 */
final class Fault extends RuntimeException {
    private static final long serialVersionUID = 1L;
    private static final String OWN_PACKAGE = "lamina.runtime.";

    final String errorMessage;
    /** The error type (an exception's class name), or null. */
    final String errorType;
    /** The stack trace as Java prints it, or null. */
    final String trace;
    final boolean fatal;

    Fault(String errorMessage, String errorType, String trace, boolean fatal) {
        super(errorMessage, null, false, false);
        this.errorMessage = errorMessage;
        this.errorType = errorType;
        this.trace = trace;
        this.fatal = fatal;
    }

    /** A fault with only a message (no error type). */
    static Fault message(String message) {
        return new Fault(message, null, null, false);
    }

    /** A fault made of a Throwable (its message, class name and trace). */
    static Fault of(Throwable t, boolean fatal) {
        return new Fault(messageOf(t), t.getClass().getName(), trace(t), fatal);
    }

    static String messageOf(Throwable t) {
        String m = t.getLocalizedMessage();
        return m == null ? t.getClass().getName() : m;
    }

    /** The body reported to the Runtime API: no stack trace, as AWS's runtime reports faults. */
    String toJson() {
        StringBuilder out = new StringBuilder("{\"errorMessage\":");
        Json.quote(errorMessage, out);
        if (errorType != null) {
            out.append(",\"errorType\":");
            Json.quote(errorType, out);
        }
        return out.append('}').toString();
    }

    /** What the function's log shows for it. */
    String logText() {
        if (errorType == null && trace == null) {
            return errorMessage;
        }
        return errorMessage + ": " + (errorType == null ? "" : errorType) + "\n"
                + (trace == null ? "" : trace);
    }

    /** The text printStackTrace gives, after the runtime's own frames are cut away. */
    static String trace(Throwable t) {
        filter(t);
        StringWriter sw = new StringWriter();
        t.printStackTrace(new PrintWriter(sw));
        return sw.toString();
    }

    /** Cut each stack trace (causes and suppressed included) at the runtime's first frame. */
    static <T extends Throwable> T filter(T t) {
        filter(t, Collections.newSetFromMap(new IdentityHashMap<Throwable, Boolean>()));
        return t;
    }

    private static void filter(Throwable t, Set<Throwable> seen) {
        if (t == null || !seen.add(t)) {
            return;
        }
        StackTraceElement[] frames = t.getStackTrace();
        for (int i = 0; i < frames.length; i++) {
            if (frames[i].getClassName().startsWith(OWN_PACKAGE)) {
                StackTraceElement[] kept = new StackTraceElement[i];
                System.arraycopy(frames, 0, kept, 0, i);
                t.setStackTrace(kept);
                break;
            }
        }
        filter(t.getCause(), seen);
        for (Throwable s : t.getSuppressed()) {
            filter(s, seen);
        }
    }

    /**
     * Lambda's Java error document for an exception the handler threw: errorMessage,
     * errorType, stackTrace (one string per frame) and, if it has one, its cause in the same
     * shape.
     */
    static String errorJson(Throwable t) {
        StringBuilder out = new StringBuilder();
        errorJson(filter(t), out, Collections.newSetFromMap(new IdentityHashMap<Throwable, Boolean>()));
        return out.toString();
    }

    private static void errorJson(Throwable t, StringBuilder out, Set<Throwable> seen) {
        seen.add(t);
        out.append("{\"errorMessage\":");
        Json.quote(messageOf(t), out);
        out.append(",\"errorType\":");
        Json.quote(t.getClass().getName(), out);
        out.append(",\"stackTrace\":[");
        StackTraceElement[] frames = t.getStackTrace();
        for (int i = 0; i < frames.length; i++) {
            if (i > 0) {
                out.append(',');
            }
            Json.quote(frames[i].toString(), out);
        }
        out.append(']');
        Throwable cause = t.getCause();
        if (cause != null && !seen.contains(cause)) {
            out.append(",\"cause\":");
            errorJson(cause, out, seen);
        }
        out.append('}');
    }
}
