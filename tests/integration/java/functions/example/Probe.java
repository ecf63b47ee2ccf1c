package example;

import com.amazonaws.services.lambda.runtime.ClientContext;
import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.LambdaRuntime;
import java.util.LinkedHashMap;
import java.util.Map;

public class Probe {
    public Map<String, Object> handleRequest(Map<String, Object> event, Context context) {
        System.out.println("probe stdout line");
        context.getLogger().log("probe logger line\nsecond line of the same event");
        LambdaRuntime.getLogger().log("probe global logger line");
        Map<String, Object> out = new LinkedHashMap<String, Object>();
        out.put("requestId", context.getAwsRequestId());
        out.put("functionName", context.getFunctionName());
        out.put("functionVersion", context.getFunctionVersion());
        out.put("invokedArn", context.getInvokedFunctionArn());
        out.put("logGroup", context.getLogGroupName());
        out.put("logStream", context.getLogStreamName());
        out.put("memory", context.getMemoryLimitInMB());
        out.put("remaining", context.getRemainingTimeInMillis());
        out.put("identity", context.getIdentity() == null ? null : context.getIdentity().getIdentityId());
        ClientContext cc = context.getClientContext();
        if (cc != null) {
            out.put("custom", cc.getCustom());
            out.put("clientEnv", cc.getEnvironment());
            out.put("appTitle", cc.getClient() == null ? null : cc.getClient().getAppTitle());
        }
        Map<String, String> env = new LinkedHashMap<String, String>();
        for (String name : new String[] {"GREETING", "AWS_LAMBDA_FUNCTION_NAME", "AWS_EXECUTION_ENV",
                "_HANDLER", "LAMBDA_TASK_ROOT", "AWS_REGION", "TZ"}) {
            env.put(name, System.getenv(name));
        }
        out.put("env", env);
        out.put("toolProperty", System.getProperty("lamina.probe"));
        out.put("maxHeap", Runtime.getRuntime().maxMemory());
        out.put("javaVersion", System.getProperty("java.specification.version"));
        out.put("encoding", System.getProperty("file.encoding"));
        out.put("cwd", System.getProperty("user.dir"));
        return out;
    }
}
