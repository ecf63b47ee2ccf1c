package lamina.runtime;

import com.amazonaws.services.lambda.runtime.LambdaLogger;
import com.amazonaws.services.lambda.runtime.LambdaRuntime;
import java.io.BufferedOutputStream;
import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.IOError;
import java.io.IOException;
import java.io.PrintStream;
import java.lang.reflect.Field;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Lamina's Java runtime: a plain client of the Lambda Runtime API.
 *
 * <p>It loads the handler named by {@code _HANDLER} with a class loader over the function's
 * class path (Lambda's: the code directory, its lib/*.jar, then the layers' java/lib/*.jar),
 * whose parent is the system class loader that holds this runtime and its own copy of the
 * aws-lambda-java-core interfaces, so those interfaces resolve to the runtime's copy whatever
 * the function bundles, as on AWS. Then it loops: next invocation, handler, response or error.
 */
public final class Main {
    private static final String TRACE_PROPERTY = "com.amazonaws.xray.traceHeader";

    private Main() {}

    public static void main(String[] args) throws Exception {
        PrintStream stdout = new PrintStream(
                new BufferedOutputStream(new FileOutputStream(FileDescriptor.out), 8192), true, "UTF-8");
        PrintStream stderr = new PrintStream(
                new BufferedOutputStream(new FileOutputStream(FileDescriptor.err), 8192), true, "UTF-8");
        System.setOut(stdout);
        System.setErr(stderr);
        Logger logger = new Logger(stdout, System.getenv("AWS_LAMBDA_LOG_FORMAT"),
                System.getenv("AWS_LAMBDA_LOG_LEVEL"));
        install(logger);
        RuntimeClient client = new RuntimeClient(System.getenv("AWS_LAMBDA_RUNTIME_API"));

        String taskRoot = System.getenv("LAMBDA_TASK_ROOT");
        if (taskRoot == null || taskRoot.isEmpty()) {
            taskRoot = System.getProperty("user.dir");
        }
        String opt = System.getenv("_LAMINA_OPT");
        if (opt == null || opt.isEmpty()) {
            opt = "/opt";
        }
        ClassLoader loader = new URLClassLoader(classPath(taskRoot, opt), ClassLoader.getSystemClassLoader());
        Thread.currentThread().setContextClassLoader(loader);

        Handlers.Handler handler;
        try {
            handler = Handlers.load(System.getenv("_HANDLER"), loader);
        } catch (Fault f) {
            initFailed(client, logger, f);
            return;
        } catch (Throwable t) {
            initFailed(client, logger, Fault.of(t, true));
            return;
        }
        serve(client, logger, handler);
    }

    private static void initFailed(RuntimeClient client, Logger logger, Fault f) {
        flush();
        logger.error(f.logText());
        try {
            client.postInitError(f.toJson().getBytes(StandardCharsets.UTF_8), f.errorType);
        } catch (IOException e) {
            // the environment is going away anyway
        }
        System.exit(1);
    }

    private static void install(LambdaLogger logger) {
        try {
            Field f = LambdaRuntime.class.getDeclaredField("logger");
            f.setAccessible(true);
            f.set(null, logger);
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException(e);
        }
    }

    /** Lambda's class path for a function: its code, then its lib/*.jar, then layers' jars. */
    static URL[] classPath(String taskRoot, String opt) throws IOException {
        List<URL> urls = new ArrayList<URL>();
        urls.add(new File(taskRoot).toURI().toURL());
        addJars(new File(taskRoot, "lib"), urls);
        addJars(new File(opt, "java/lib"), urls);
        return urls.toArray(new URL[0]);
    }

    private static void addJars(File dir, List<URL> urls) throws IOException {
        String[] names = dir.list();
        if (names == null) {
            return;
        }
        Arrays.sort(names); // the file system's order is not stable; Lambda sorts by name
        for (String name : names) {
            if (name.endsWith(".jar")) {
                urls.add(new File(dir, name).toURI().toURL());
            }
        }
    }

    private static void flush() {
        System.out.flush();
        System.err.flush();
    }

    private static void serve(RuntimeClient client, Logger logger, Handlers.Handler handler) {
        Invocation.Environment env = new Invocation.Environment(logger);
        ByteArrayOutputStream output = new ByteArrayOutputStream(1024);
        while (true) {
            RuntimeClient.Response next;
            try {
                next = client.next();
            } catch (IOException e) {
                System.exit(0); // the Runtime API is gone: the environment is shutting down
                return;
            }
            Invocation context = new Invocation(next, env);
            String requestId = context.getAwsRequestId();
            logger.invocation(requestId, context.getTenantId());
            if (context.traceId() != null) {
                System.setProperty(TRACE_PROPERTY, context.traceId());
            } else {
                System.clearProperty(TRACE_PROPERTY);
            }
            output.reset();
            try {
                try {
                    handler.handle(next.body, output, context);
                } finally {
                    flush();
                }
            } catch (Fault f) {
                logger.error(f.logText());
                post(client, requestId, f.toJson(), f.errorType);
                if (f.fatal) {
                    System.exit(1);
                }
                continue;
            } catch (Throwable t) {
                failed(client, logger, requestId, t);
                if (t instanceof VirtualMachineError || t instanceof IOError) {
                    System.exit(1);
                }
                continue;
            }
            try {
                client.postResponse(requestId, output.toByteArray());
            } catch (IOException e) {
                System.exit(0);
            }
            Thread.interrupted(); // a flag the handler left set must not hit the next one
        }
    }

    private static void failed(RuntimeClient client, Logger logger, String requestId, Throwable t) {
        Fault.filter(t);
        logger.error(Fault.of(t, false).logText());
        post(client, requestId, Fault.errorJson(t), t.getClass().getName());
    }

    private static void post(RuntimeClient client, String requestId, String body, String errorType) {
        try {
            client.postError(requestId, body.getBytes(StandardCharsets.UTF_8), errorType);
        } catch (IOException e) {
            System.exit(0); // the Runtime API is gone: the environment is shutting down
        }
    }
}
