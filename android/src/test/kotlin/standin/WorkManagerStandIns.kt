// STAND-INS, NOT THE REAL APIs (see AndroidStandIns.kt): WorkManager's `CoroutineWorker`,
// `WorkerParameters` and `ListenableWorker.Result`.
@file:Suppress("unused", "UNUSED_PARAMETER")

package androidx.work

import android.content.Context

/** Stand-in for `androidx.work.WorkerParameters`. */
class WorkerParameters(val runAttemptCount: Int = 0)

/** Stand-in for `androidx.work.ListenableWorker`. */
abstract class ListenableWorker(val applicationContext: Context, val params: WorkerParameters) {
    /** Stand-in for `androidx.work.ListenableWorker.Result`. */
    sealed class Result {
        class Success : Result()
        class Retry : Result()
        class Failure : Result()
        companion object {
            fun success(): Result = Success()
            fun retry(): Result = Retry()
            fun failure(): Result = Failure()
        }
    }
}

/** Stand-in for `androidx.work.CoroutineWorker`. */
abstract class CoroutineWorker(context: Context, params: WorkerParameters) :
    ListenableWorker(context, params) {
    abstract suspend fun doWork(): Result
}
