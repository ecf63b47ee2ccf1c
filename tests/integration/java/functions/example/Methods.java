package example;

import com.amazonaws.services.lambda.runtime.Context;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.util.List;

public class Methods {
    private final long made = System.nanoTime();

    public static String shout(String s) {
        return s.toUpperCase() + "!";
    }

    public int sum(List<Integer> xs, Context context) {
        int total = 0;
        for (int x : xs) {
            total += x;
        }
        return total;
    }

    // Overloads: Lambda takes the longest signature (a trailing Context counting one more).
    public String pick(String s) {
        return "one-arg";
    }

    public String pick(String s, Context context) {
        return "with-context";
    }

    public void raw(InputStream in, OutputStream out, Context context) throws IOException {
        int n = 0;
        while (in.read() >= 0) {
            n++;
        }
        out.write(("[" + n + "]").getBytes("UTF-8"));
    }

    public long instance() {
        return made;
    }

    public void nothing(String s) {
        System.out.println("nothing got " + s);
    }
}
