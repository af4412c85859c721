/*
 * The local stack's PySpark REPL driver for Apache Livy's interactive sessions.
 *
 * Livy's own REPL (the livy-repl module, org.apache.livy.repl.ReplDriver) ships only in Livy's
 * binary distribution; no version of it is published to Maven Central, which is all the local
 * stack can reach. The Livy server starts every interactive session with the driver class named
 * here, so this class takes that name. Everything around it is Livy's own: the REST API, the
 * session and statement states, the RPC between server and driver (livy-rsc). It runs "pyspark"
 * statements only, one at a time, in one Python process bound to the session's SparkContext
 * through py4j, as Livy's PythonInterpreter does, and reports them in Livy's output format
 * ({"status": "ok", "execution_count": n, "data": {"text/plain": ...}} or "error" with
 * ename, evalue and traceback). Cancelling follows Livy's Session.cancel: a waiting statement is
 * cancelled at once, a running one by cancelling its Spark job group until it ends or
 * livy.rsc.job-cancel.timeout passes.
 *
 * On Amazon EMR, Livy's own REPL runs the sessions; this class is never used there.
 */
package org.apache.livy.repl;

import io.netty.channel.ChannelHandlerContext;
import java.io.BufferedReader;
import java.io.BufferedWriter;
import java.io.File;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.net.InetAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentSkipListMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.livy.rsc.BaseProtocol;
import org.apache.livy.rsc.RSCConf;
import org.apache.livy.rsc.ReplJobResults;
import org.apache.livy.rsc.driver.RSCDriver;
import org.apache.livy.rsc.driver.SparkEntries;
import org.apache.livy.rsc.driver.Statement;
import org.apache.livy.rsc.driver.StatementState;
import org.apache.livy.rsc.rpc.Rpc;
import org.apache.spark.SparkConf;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.sql.SparkSession;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import py4j.ClientServer;

public class ReplDriver extends RSCDriver {
  private static final Logger LOG = LoggerFactory.getLogger(ReplDriver.class);

  private final ConcurrentSkipListMap<Integer, Statement> statements = new ConcurrentSkipListMap<>();
  private final AtomicInteger nextId = new AtomicInteger();
  private final ExecutorService runner = Executors.newSingleThreadExecutor(daemon("repl-statements"));
  private final ExecutorService canceller = Executors.newSingleThreadExecutor(daemon("repl-cancel"));
  private volatile String state = "starting";
  private SparkEntries entries;
  private ClientServer gateway;
  private Process python;
  private BufferedWriter toPython;
  private BufferedReader fromPython;

  public ReplDriver(SparkConf conf, RSCConf livyConf) throws Exception {
    super(conf, livyConf);
  }

  private static java.util.concurrent.ThreadFactory daemon(String name) {
    return runnable -> {
      Thread thread = new Thread(runnable, name);
      thread.setDaemon(true);
      return thread;
    };
  }

  // ------------------------------------------------------------------ start and stop

  @Override
  protected SparkEntries initializeSparkEntries() throws Exception {
    entries = new SparkEntries(conf);
    entries.sc();
    entries.sparkSession();
    try {
      startPython();
    } catch (Exception e) {
      LOG.error("the Python interpreter did not start", e);
      setState("error");
      throw e;
    }
    setState("idle");
    return entries;
  }

  /** The session's SparkContext, for the Python side (py4j entry point). */
  public JavaSparkContext javaSparkContext() {
    return entries.sc();
  }

  /** The session's SparkSession, for the Python side (py4j entry point). */
  public SparkSession sparkSession() throws Exception {
    return entries.sparkSession();
  }

  private void startPython() throws Exception {
    byte[] secretBytes = new byte[32];
    new SecureRandom().nextBytes(secretBytes);
    StringBuilder secret = new StringBuilder();
    for (byte b : secretBytes) {
      secret.append(String.format("%02x", b));
    }
    // A py4j ClientServer, as PySpark's pinned-thread mode (its default) expects: each Python
    // thread talks to a JVM thread of its own.
    gateway = new ClientServer.ClientServerBuilder()
        .entryPoint(this)
        .javaPort(0)
        .javaAddress(InetAddress.getLoopbackAddress())
        .authToken(secret.toString())
        .build();

    Path script = Files.createTempFile("spotlake-repl", ".py");
    script.toFile().deleteOnExit();
    try (InputStream in = ReplDriver.class.getResourceAsStream("/spotlake_repl.py")) {
      Files.copy(in, script, StandardCopyOption.REPLACE_EXISTING);
    }
    String executable = firstSet(
        conf.get("spark.pyspark.driver.python", null), conf.get("spark.pyspark.python", null),
        System.getenv("PYSPARK_DRIVER_PYTHON"), System.getenv("PYSPARK_PYTHON"), "python3");
    ProcessBuilder builder = new ProcessBuilder(executable, "-u", script.toString());
    Map<String, String> env = builder.environment();
    env.put("PYSPARK_GATEWAY_PORT", Integer.toString(gateway.getJavaServer().getListeningPort()));
    env.put("PYSPARK_GATEWAY_SECRET", secret.toString());
    env.put("PYTHONUNBUFFERED", "1");
    env.put("PYSPARK_PIN_THREAD", "true");
    List<String> path = new ArrayList<>(pysparkLibraries());
    String existing = System.getenv("PYTHONPATH");
    if (existing != null && !existing.isEmpty()) {
      path.add(existing);
    }
    env.put("PYTHONPATH", String.join(File.pathSeparator, path));
    builder.redirectError(ProcessBuilder.Redirect.INHERIT);
    python = builder.start();
    toPython = new BufferedWriter(new OutputStreamWriter(python.getOutputStream(), StandardCharsets.UTF_8));
    fromPython = new BufferedReader(new InputStreamReader(python.getInputStream(), StandardCharsets.UTF_8));
    String ready = fromPython.readLine();
    if (ready == null || !ready.contains("\"ready\"")) {
      throw new IllegalStateException("the Python interpreter exited before it was ready: " + ready);
    }
    LOG.info("PySpark interpreter ready ({})", executable);
  }

  private static String firstSet(String... values) {
    for (String value : values) {
      if (value != null && !value.isEmpty()) {
        return value;
      }
    }
    return null;
  }

  /** pyspark.zip and py4j's zip from $SPARK_HOME/python/lib, as spark-submit gives a Python job. */
  private static List<String> pysparkLibraries() throws Exception {
    List<String> found = new ArrayList<>();
    String home = System.getenv("SPARK_HOME");
    if (home == null) {
      return found;
    }
    Path lib = Paths.get(home, "python", "lib");
    if (!Files.isDirectory(lib)) {
      return found;
    }
    try (DirectoryStream<Path> zips = Files.newDirectoryStream(lib, "*.zip")) {
      for (Path zip : zips) {
        found.add(zip.toString());
      }
    }
    return found;
  }

  @Override
  protected void shutdownContext() {
    try {
      if (python != null) {
        python.destroy();
      }
      if (gateway != null) {
        gateway.shutdown();
      }
      runner.shutdownNow();
      canceller.shutdownNow();
    } finally {
      super.shutdownContext();
    }
  }

  @Override
  protected void onClientAuthenticated(Rpc client) {
    client.call(new BaseProtocol.ReplState(state));
  }

  private void setState(String next) {
    state = next;
    broadcast(new BaseProtocol.ReplState(next));
  }

  // ------------------------------------------------------------------ statements

  public Integer handle(ChannelHandlerContext ctx, BaseProtocol.ReplJobRequest msg) {
    int id = nextId.getAndIncrement();
    Statement statement = new Statement(id, msg.code, StatementState.Waiting, null);
    statements.put(id, statement);
    runner.submit(() -> execute(statement));
    return id;
  }

  private void execute(Statement statement) {
    if (!statement.compareAndTransit(StatementState.Waiting, StatementState.Running)) {
      return;  // cancelled while waiting
    }
    statement.started = System.currentTimeMillis();
    setState("busy");
    String output;
    boolean died = false;
    try {
      output = call(statement.id, statement.code);
    } catch (Exception e) {
      LOG.error("statement " + statement.id + ": the Python interpreter died", e);
      output = error(statement.id, "Error", "Interpreter died:\n" + e);
      died = true;
    }
    statement.output = output;
    statement.compareAndTransit(StatementState.Running, StatementState.Available);
    statement.compareAndTransit(StatementState.Cancelling, StatementState.Cancelled);
    statement.updateProgress(1.0);
    statement.completed = System.currentTimeMillis();
    if (died) {
      setState("error");
    } else if (statement.id == nextId.get() - 1 || statements.tailMap(statement.id, false).values().stream()
        .noneMatch(s -> s.state.get() == StatementState.Waiting)) {
      setState("idle");
    }
  }

  private synchronized String call(int id, String code) throws Exception {
    toPython.write("{\"id\":" + id + ",\"code\":" + jsonString(code) + "}\n");
    toPython.flush();
    String line = fromPython.readLine();
    if (line == null) {
      int exit = python.waitFor();
      throw new IllegalStateException("the Python interpreter exited with status " + exit);
    }
    return line;
  }

  private static String error(int id, String ename, String evalue) {
    return "{\"status\":\"error\",\"execution_count\":" + id + ",\"ename\":" + jsonString(ename)
        + ",\"evalue\":" + jsonString(evalue) + ",\"traceback\":[]}";
  }

  private static String jsonString(String text) {
    StringBuilder out = new StringBuilder("\"");
    for (char c : text.toCharArray()) {
      switch (c) {
        case '"': out.append("\\\""); break;
        case '\\': out.append("\\\\"); break;
        case '\n': out.append("\\n"); break;
        case '\r': out.append("\\r"); break;
        case '\t': out.append("\\t"); break;
        default:
          if (c < 0x20) {
            out.append(String.format("\\u%04x", (int) c));
          } else {
            out.append(c);
          }
      }
    }
    return out.append('"').toString();
  }

  public void handle(ChannelHandlerContext ctx, BaseProtocol.CancelReplJobRequest msg) {
    Statement statement = statements.get(msg.id);
    if (statement == null || statement.state.get().isOneOf(
        StatementState.Available, StatementState.Cancelled, StatementState.Cancelling)) {
      return;
    }
    statement.compareAndTransit(StatementState.Waiting, StatementState.Cancelled);
    statement.compareAndTransit(StatementState.Running, StatementState.Cancelling);
    LOG.info("cancelling statement {}", msg.id);
    long timeout = livyConf.getTimeAsMs(RSCConf.Entry.JOB_CANCEL_TIMEOUT);
    long interval = livyConf.getTimeAsMs(RSCConf.Entry.JOB_CANCEL_TRIGGER_INTERVAL);
    canceller.submit(() -> {
      long deadline = System.currentTimeMillis() + timeout;
      while (statement.state.get() == StatementState.Cancelling) {
        if (System.currentTimeMillis() > deadline) {
          LOG.info("statement {} did not stop within {} ms; marked cancelled", msg.id, timeout);
          statement.compareAndTransit(StatementState.Cancelling, StatementState.Cancelled);
        } else {
          entries.sc().cancelJobGroup(Integer.toString(msg.id));
          try {
            Thread.sleep(interval);
          } catch (InterruptedException e) {
            return;
          }
        }
      }
      if (statement.state.get() == StatementState.Cancelled) {
        statement.completed = System.currentTimeMillis();
      }
    });
  }

  public String[] handle(ChannelHandlerContext ctx, BaseProtocol.ReplCompleteRequest msg) {
    return new String[0];
  }

  public ReplJobResults handle(ChannelHandlerContext ctx, BaseProtocol.GetReplJobResults msg) {
    List<Statement> found = new ArrayList<>();
    if (msg.allResults) {
      found.addAll(statements.values());
    } else {
      int from = msg.from;
      int until = from + msg.size;
      found.addAll(statements.subMap(from, true, until, false).values());
    }
    return new ReplJobResults(found.toArray(new Statement[0]));
  }
}
