package layered;

// Ships in a layer, as java/lib/shout.jar: Lambda puts layers' jars on the function's class path.
public final class Shout {
    private Shout() {}

    public static String loud(String s) {
        return s.toUpperCase() + " (from a layer)";
    }
}
