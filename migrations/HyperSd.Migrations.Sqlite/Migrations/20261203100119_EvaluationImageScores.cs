using System;
using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace HyperSd.Migrations.Sqlite.Migrations
{
    /// <inheritdoc />
    public partial class EvaluationImageScores : Migration
    {
        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.CreateTable(
                name: "evaluation_image_scores",
                columns: table => new
                {
                    id = table.Column<Guid>(type: "TEXT", nullable: false),
                    run_id = table.Column<Guid>(type: "TEXT", nullable: false),
                    stage_id = table.Column<Guid>(type: "TEXT", nullable: false),
                    model = table.Column<string>(type: "TEXT", nullable: false),
                    sampler = table.Column<string>(type: "TEXT", nullable: false),
                    steps = table.Column<int>(type: "INTEGER", nullable: false),
                    prompt_index = table.Column<int>(type: "INTEGER", nullable: false),
                    reward = table.Column<string>(type: "TEXT", nullable: false),
                    score = table.Column<double>(type: "REAL", nullable: false),
                    created_at = table.Column<long>(type: "INTEGER", nullable: false)
                },
                constraints: table =>
                {
                    table.PrimaryKey("pk_evaluation_image_scores", x => x.id);
                    table.ForeignKey(
                        name: "fk_evaluation_image_scores_runs_run_id",
                        column: x => x.run_id,
                        principalTable: "runs",
                        principalColumn: "id",
                        onDelete: ReferentialAction.Cascade);
                    table.ForeignKey(
                        name: "fk_evaluation_image_scores_stages_stage_id",
                        column: x => x.stage_id,
                        principalTable: "stages",
                        principalColumn: "id",
                        onDelete: ReferentialAction.Restrict);
                });

            migrationBuilder.CreateIndex(
                name: "ix_evaluation_image_scores_run_id_model_sampler_steps_reward_prompt_index",
                table: "evaluation_image_scores",
                columns: new[] { "run_id", "model", "sampler", "steps", "reward", "prompt_index" },
                unique: true);

            migrationBuilder.CreateIndex(
                name: "ix_evaluation_image_scores_stage_id",
                table: "evaluation_image_scores",
                column: "stage_id");
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropTable(
                name: "evaluation_image_scores");
        }
    }
}
