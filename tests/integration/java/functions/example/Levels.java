package example;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.LambdaLogger;
import com.amazonaws.services.lambda.runtime.logging.LogLevel;
import java.util.Map;

public class Levels {
    public String handleRequest(Map<String, Object> event, Context context) {
        LambdaLogger logger = context.getLogger();
        logger.log("level-debug", LogLevel.DEBUG);
        logger.log("level-info", LogLevel.INFO);
        logger.log("level-error", LogLevel.ERROR);
        logger.log("level-none");
        return "logged";
    }
}
