package example;

import com.amazonaws.services.lambda.runtime.CustomPojoSerializer;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.lang.reflect.Type;
import java.nio.charset.StandardCharsets;

// A function's own serializer (found through META-INF/services): it reads the whole event as
// text and writes results as a tagged JSON string.
public class TaggingSerializer implements CustomPojoSerializer {
    @Override
    @SuppressWarnings("unchecked")
    public <T> T fromJson(InputStream input, Type type) {
        try {
            ByteArrayOutputStream buf = new ByteArrayOutputStream();
            byte[] chunk = new byte[4096];
            for (int n; (n = input.read(chunk)) > 0; ) {
                buf.write(chunk, 0, n);
            }
            return fromJson(new String(buf.toByteArray(), StandardCharsets.UTF_8), type);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    @Override
    @SuppressWarnings("unchecked")
    public <T> T fromJson(String input, Type type) {
        return (T) ("raw:" + input);
    }

    @Override
    public <T> void toJson(T value, OutputStream output, Type type) {
        try {
            output.write(("\"custom:" + value + "\"").getBytes(StandardCharsets.UTF_8));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
