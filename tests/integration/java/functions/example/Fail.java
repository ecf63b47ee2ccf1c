package example;

import com.amazonaws.services.lambda.runtime.Context;
import java.io.IOException;
import java.util.Map;

public class Fail {
    public String handleRequest(Map<String, Object> event, Context context) {
        System.out.println("about to fail");
        throw new IllegalStateException("outer failure", new IOException("inner cause"));
    }
}
