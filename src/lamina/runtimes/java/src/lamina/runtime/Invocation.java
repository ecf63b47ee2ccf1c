package lamina.runtime;

import com.amazonaws.services.lambda.runtime.Client;
import com.amazonaws.services.lambda.runtime.ClientContext;
import com.amazonaws.services.lambda.runtime.CognitoIdentity;
import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.LambdaLogger;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

/** The Context of one invocation, from the Runtime API's headers and the environment. */
final class Invocation implements Context {
    private final String requestId;
    private final long deadlineMs;
    private final String invokedArn;
    private final String traceId;
    private final String tenantId;
    private final CognitoIdentity identity;
    private final ClientContext clientContext;
    private final Environment env;

    /** What does not change between invocations. */
    static final class Environment {
        final String functionName = System.getenv("AWS_LAMBDA_FUNCTION_NAME");
        final String functionVersion = System.getenv("AWS_LAMBDA_FUNCTION_VERSION");
        final String logGroup = System.getenv("AWS_LAMBDA_LOG_GROUP_NAME");
        final String logStream = System.getenv("AWS_LAMBDA_LOG_STREAM_NAME");
        final int memoryMb = parseInt(System.getenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"));
        final LambdaLogger logger;

        Environment(LambdaLogger logger) {
            this.logger = logger;
        }

        private static int parseInt(String s) {
            try {
                return Integer.parseInt(s);
            } catch (RuntimeException e) {
                return 0;
            }
        }
    }

    Invocation(RuntimeClient.Response next, Environment env) {
        this.env = env;
        this.requestId = next.header("Lambda-Runtime-Aws-Request-Id");
        long deadline;
        try {
            deadline = Long.parseLong(next.header("Lambda-Runtime-Deadline-Ms"));
        } catch (RuntimeException e) {
            deadline = System.currentTimeMillis();
        }
        this.deadlineMs = deadline;
        this.invokedArn = next.header("Lambda-Runtime-Invoked-Function-Arn");
        String trace = next.header("Lambda-Runtime-Trace-Id");
        this.traceId = trace == null || trace.isEmpty() ? null : trace;
        String tenant = next.header("Lambda-Runtime-Aws-Tenant-Id");
        this.tenantId = tenant == null || tenant.isEmpty() ? null : tenant;
        this.identity = identity(next.header("Lambda-Runtime-Cognito-Identity"));
        this.clientContext = clientContext(next.header("Lambda-Runtime-Client-Context"));
    }

    String traceId() {
        return traceId;
    }

    @Override
    public String getAwsRequestId() {
        return requestId;
    }

    @Override
    public String getLogGroupName() {
        return env.logGroup;
    }

    @Override
    public String getLogStreamName() {
        return env.logStream;
    }

    @Override
    public String getFunctionName() {
        return env.functionName;
    }

    @Override
    public String getFunctionVersion() {
        return env.functionVersion;
    }

    @Override
    public String getInvokedFunctionArn() {
        return invokedArn;
    }

    @Override
    public CognitoIdentity getIdentity() {
        return identity;
    }

    @Override
    public ClientContext getClientContext() {
        return clientContext;
    }

    @Override
    public int getRemainingTimeInMillis() {
        return (int) Math.max(0, deadlineMs - System.currentTimeMillis());
    }

    @Override
    public int getMemoryLimitInMB() {
        return env.memoryMb;
    }

    @Override
    public LambdaLogger getLogger() {
        return env.logger;
    }

    @Override
    public String getXrayTraceId() {
        return traceId;
    }

    @Override
    public String getTenantId() {
        return tenantId;
    }

    @Override
    public String toString() {
        return "LambdaContext{requestId=" + requestId + ", functionName=" + env.functionName
                + ", functionVersion=" + env.functionVersion + "}";
    }

    // -- the mobile SDK's headers ----------------------------------------------------------

    private static Map<?, ?> object(String header) {
        if (header == null || header.isEmpty()) {
            return null;
        }
        try {
            Object tree = Json.parse(header);
            return tree instanceof Map ? (Map<?, ?>) tree : null;
        } catch (IllegalArgumentException e) {
            return null;
        }
    }

    private static String str(Map<?, ?> m, String key) {
        Object v = m == null ? null : m.get(key);
        return v == null ? null : v.toString();
    }

    private static Map<String, String> strings(Object v) {
        if (!(v instanceof Map)) {
            return null;
        }
        Map<String, String> out = new LinkedHashMap<String, String>();
        for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) {
            out.put(String.valueOf(e.getKey()), e.getValue() == null ? null : e.getValue().toString());
        }
        return Collections.unmodifiableMap(out);
    }

    private static CognitoIdentity identity(String header) {
        final Map<?, ?> m = object(header);
        if (m == null) {
            return null;
        }
        return new CognitoIdentity() {
            public String getIdentityId() {
                return str(m, "cognitoIdentityId");
            }

            public String getIdentityPoolId() {
                return str(m, "cognitoIdentityPoolId");
            }
        };
    }

    private static ClientContext clientContext(String header) {
        Map<?, ?> m = object(header);
        if (m == null) {
            return null;
        }
        final Map<?, ?> c = m.get("client") instanceof Map ? (Map<?, ?>) m.get("client") : null;
        final Client client = c == null ? null : new Client() {
            public String getInstallationId() {
                return str(c, "installation_id");
            }

            public String getAppTitle() {
                return str(c, "app_title");
            }

            public String getAppVersionName() {
                return str(c, "app_version_name");
            }

            public String getAppVersionCode() {
                return str(c, "app_version_code");
            }

            public String getAppPackageName() {
                return str(c, "app_package_name");
            }
        };
        final Map<String, String> custom = strings(m.get("custom"));
        final Map<String, String> environment = strings(m.get("env"));
        return new ClientContext() {
            public Client getClient() {
                return client;
            }

            public Map<String, String> getCustom() {
                return custom;
            }

            public Map<String, String> getEnvironment() {
                return environment;
            }
        };
    }
}
